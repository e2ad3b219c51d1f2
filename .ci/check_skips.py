"""Compare the skip report of a CI pytest run (DOMINO_SKIP_REPORT, written by tests/conftest.py)
with .ci/expected_skips. Exit 1, with the offending tests, when a test was skipped that may not
be, or when the number of gpu-marked skips differs from the expected one.

Usage: python3 .ci/check_skips.py REPORT.json [EXPECTED_FILE]
"""

import collections
import json
import sys
from pathlib import Path


def parse_expected(text: str) -> tuple[int, list[str]]:
    gpu, allow = None, []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "gpu" and value.strip().isdigit():
            gpu = int(value)
        elif key == "allow" and value.strip():
            allow.append(value.strip())
        else:
            raise SystemExit(f"expected_skips line {n}: {raw!r} is neither 'gpu N' nor "
                             "'allow REASON'")
    if gpu is None:
        raise SystemExit("expected_skips: no 'gpu N' line")
    return gpu, allow


def check(skipped: list[dict], gpu_expected: int, allow: list[str]) -> list[str]:
    """The problems (empty: the skips are as expected)."""
    problems = []
    bad = [s for s in skipped if not s["gpu"] and s["reason"] not in allow]
    for s in bad:
        problems.append(f"skipped but not gpu-marked: {s['nodeid']} ({s['reason']})")
    n_gpu = sum(s["gpu"] for s in skipped)
    if n_gpu != gpu_expected:
        problems.append(f"{n_gpu} gpu-marked tests skipped, .ci/expected_skips says {gpu_expected}"
                        " (update it and README's test command together)")
    return problems


def readme_skips(readme: Path) -> int | None:
    """The number of skipped tests README's test command states ("N skipped (the gpu-marked")."""
    import re

    m = re.search(r"(\d+) skipped \(the gpu-marked", readme.read_text()) if readme.is_file() else None
    return int(m.group(1)) if m else None


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    report = Path(argv[0])
    if not report.is_file() or not report.stat().st_size:
        print(f"SKIP CHECK FAILED: no skip report at {report} (did pytest run to the end?)")
        return 1
    skipped = json.loads(report.read_text())["skipped"]
    expected = Path(argv[1] if len(argv) == 2 else Path(__file__).with_name("expected_skips"))
    gpu_expected, allow = parse_expected(expected.read_text())
    stated = readme_skips(expected.parent.parent / "README.md")
    if stated != gpu_expected:
        print(f"SKIP CHECK FAILED: README's test command says {stated} skipped, "
              f".ci/expected_skips says {gpu_expected}: change both together")
        return 1
    try:
        import torch

        if torch.cuda.is_available():
            gpu_expected = 0
    except ImportError:
        pass
    reasons = collections.Counter(s["reason"] for s in skipped)
    print(f"skipped: {len(skipped)} ({', '.join(f'{n} x {r}' for r, n in reasons.items())})"
          if skipped else "skipped: 0")
    problems = check(skipped, gpu_expected, allow)
    for p in problems:
        print(f"SKIP CHECK FAILED: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
