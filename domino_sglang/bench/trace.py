"""Where the time of one speculative round goes: aggregation of an SGLang torch-profiler trace.

Input: the Chrome trace JSON that SGLang 0.5.17's ``/start_profile`` writes (torch profiler /
Kineto export, ``<profile_id>-TP-0.trace.json.gz``): complete events (``"ph": "X"``, ``ts`` and
``dur`` in microseconds) of these categories

* ``kernel``, ``gpu_memcpy``, ``gpu_memset``: GPU activity (CUDA-graph kernels included, each
  with the ``correlation`` of the ``cudaGraphLaunch`` that ran it);
* ``cuda_runtime`` / ``cuda_driver``: the host's CUDA calls (``cudaLaunchKernel``,
  ``cuLaunchKernel`` for Triton, ``cudaGraphLaunch``, syncs, copies), with ``correlation``;
* ``cpu_op`` (aten ops), ``user_annotation`` (``record_function`` spans), ``python_function``
  (only with ``with_stack``).

Rounds: SGLang wraps every scheduler step in a ``scheduler.run_batch`` span and every model
forward in ``step[<MODE> bs=<N>]`` (``utils/profile_utils.build_step_span_name``). One round is
the time from one ``run_batch`` start to the next (right also with overlap scheduling, where the
GPU runs a step behind the host); rounds with a prefill (``EXTEND``/``MIXED``) or another batch
size than the one asked for are left out, and the longest contiguous run of clean rounds is the
measured window. Everything is reported per round (window / rounds):

* wall, GPU busy (union of GPU activity intervals clipped to the window), GPU idle (wall - busy:
  host-side time the GPU does not hide), summed kernel time;
* kernel time and calls by category (:func:`kernel_category`) and by name (top N), each
  kernel's launch path (inside a CUDA graph or launched eagerly) and the host span it was
  launched from (the innermost ``step[...]``, else the innermost span: draft / verify / other);
* host: self time of CPU ops and spans (a span's self time is Python between its ops), CUDA API
  call counts and times (graph launches, eager launches, syncs).

:func:`compare` gives one system minus another; :func:`markdown` renders results. Pure Python
(``gzip`` + ``json``): runs on the GPU host without torch.
"""

from __future__ import annotations

import bisect
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
RUNTIME_CATS = frozenset({"cuda_runtime", "cuda_driver"})
HOST_CATS = frozenset({"cpu_op", "user_annotation", "python_function"}) | RUNTIME_CATS
ROUND_SPAN = "scheduler.run_batch"
GRAPH_LAUNCHES = frozenset({"cudaGraphLaunch", "cuGraphLaunch"})
KERNEL_LAUNCHES = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                             "cuLaunchKernelEx", "cudaLaunchCooperativeKernel"})
PREFILL_MODES = frozenset({"EXTEND", "MIXED", "SPLIT_PREFILL"})
_STEP_RE = re.compile(r"^step\[(\w+) bs=(\d+)")
_TRITON_JIT_RE = re.compile(r"@triton\.jit[^\n]*\n(?:\s*@[^\n]*\n)*\s*def\s+(\w+)\s*\(")
NAME_CHARS = 160  # kernel names (C++ templates) are cut to this for the report

# kernel categories, first match wins (after our own Triton kernels and the copy/memset events)
CATEGORY_RULES = (
    ("nccl", re.compile(r"nccl", re.I)),
    ("kv_index", re.compile(r"kv_indices|req_to_token|cache_loc|store_cache|set_kv|kv_buffer|"
                            r"assign_.*(?:cache|loc|req)", re.I)),
    ("argmax_sampling", re.compile(r"argmax|argmin|topk|top_k|top_p|sampl|multinomial|softmax|"
                                   r"cumsum|sort|radix|exponential|uniform|philox|normal_", re.I)),
    ("norm_rope_act", re.compile(r"rms_?norm|layer_?norm|norm_?kernel|rotary|rope_|_rope|silu|"
                                 r"gelu|act_and_mul|swiglu", re.I)),
    ("attention", re.compile(r"attn|attention|flash|fmha|_fwd_kernel|decode_att|extend_att|"
                             r"merge_state|paged", re.I)),
    ("gemm", re.compile(r"gemm|gemv|cutlass|cublas|nvjet|xmma|s16816|s1688|matmul|splitk|"
                        r"sm\d\d_.*(?:tensorop|h\d+)", re.I)),
    ("elementwise_copy", re.compile(r"elementwise|vectorized|unrolled|copy|fill|index|scatter|"
                                    r"gather|cat_|catarray|where|reduce_kernel|arange|memcpy|"
                                    r"memset|compare|masked", re.I)),
)
CATEGORIES = ("domino_head", "domino_tree", "nccl", "copy_memset", "kv_index", "argmax_sampling",
              "norm_rope_act", "attention", "gemm", "elementwise_copy", "other")


# ---- input -----------------------------------------------------------------------------------
def load_trace(path: Path) -> dict:
    """A Chrome trace (``.json`` or ``.json.gz``) as a dict with ``traceEvents``."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise ValueError(f"{path}: not a Chrome trace (no traceEvents list)")
    return data


def gzip_complete(path: Path) -> bool:
    """True when ``path`` is a whole gzip stream (a trace still being written is not)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
        return True
    except (OSError, EOFError):
        return False


def triton_kernel_names(folder: Path) -> dict[str, str]:
    """``@triton.jit`` function names of our ``kernels/`` folder -> category: ``domino_tree``
    for ``tree_*.py``, ``domino_head`` for the others (what the trace calls our kernels)."""
    out = {}
    for path in sorted(Path(folder).glob("*.py")):
        cat = "domino_tree" if path.stem.startswith("tree_") else "domino_head"
        for name in _TRITON_JIT_RE.findall(path.read_text()):
            out.setdefault(name, cat)
    return out


def kernel_category(name: str, cat: str = "kernel", ours: dict | None = None) -> str:
    """Category of one GPU event: ours (exact Triton name) > copy/memset events > the name
    rules of :data:`CATEGORY_RULES` > ``other``."""
    if ours and name in ours:
        return ours[name]
    if cat in ("gpu_memcpy", "gpu_memset"):
        return "copy_memset"
    for label, rx in CATEGORY_RULES:
        if rx.search(name):
            return label
    return "other"


# ---- interval maths --------------------------------------------------------------------------
def union_length(intervals) -> float:
    """Total length covered by ``[(start, end), ...]`` (overlaps counted once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def clip(start: float, end: float, lo: float, hi: float) -> float:
    """Length of ``[start, end)`` inside ``[lo, hi)``."""
    return max(0.0, min(end, hi) - max(start, lo))


def _complete_events(trace: dict) -> list[dict]:
    out = []
    for e in trace.get("traceEvents", []):
        if e.get("ph") != "X" or "ts" not in e:
            continue
        if e.get("cat") not in GPU_CATS and e.get("cat") not in HOST_CATS:
            continue
        e = dict(e)
        e["ts"], e["dur"] = float(e["ts"]), float(e.get("dur", 0.0))
        out.append(e)
    return out


def _corr(e: dict):
    return (e.get("args") or {}).get("correlation")


# ---- rounds ----------------------------------------------------------------------------------
def find_rounds(events: list[dict], batch_size: int | None = None,
                near_frac: float = 0.1) -> dict:
    """The measured window: the longest contiguous run of clean rounds (see module doc). When
    no round ran exactly ``batch_size`` requests, rounds of up to ``near_frac`` fewer count
    (``batch_size_match`` says which).

    Returns ``{"window": (lo, hi) | None, "rounds": n, "found": all rounds, "clean": n clean,
    "durations_us": [...], "modes": {mode: rounds}, "batch_sizes": {bs: rounds}}``."""
    spans = sorted((e for e in events if e["name"] == ROUND_SPAN and e["cat"] not in GPU_CATS),
                   key=lambda e: e["ts"])
    steps = sorted(((e["ts"], m.group(1), int(m.group(2))) for e in events
                    if e["cat"] not in GPU_CATS and (m := _STEP_RE.match(e["name"]))))
    starts = [s["ts"] for s in spans]
    info = [{"modes": set(), "bs": set()} for _ in spans]
    for ts, mode, bs in steps:
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= spans[i]["ts"] + spans[i]["dur"]:
            info[i]["modes"].add(mode)
            info[i]["bs"].add(bs)
    n = len(spans) - 1  # the last span has no next start: not a whole round

    def is_clean(i: int, low: int) -> bool:
        modes, bss = info[i]["modes"], info[i]["bs"]
        ok = not (modes & PREFILL_MODES)
        if ok and batch_size is not None and bss:
            ok = low <= max(bss) <= batch_size
        return ok

    clean = [is_clean(i, batch_size or 0) for i in range(max(n, 0))]
    match = "exact"
    if batch_size is not None and not any(clean):
        # a few requests finished or were retracted while the profiler ran: rounds within
        # near_frac below the asked size still measure that load (the size seen is reported)
        low = batch_size - max(1, int(batch_size * near_frac))
        clean = [is_clean(i, low) for i in range(max(n, 0))]
        match = f"near: rounds of {low}-{batch_size} requests"
    best, cur = (0, -1), None
    for i, ok in enumerate(clean):
        if ok:
            cur = i if cur is None else cur
            if i - cur > best[1] - best[0]:
                best = (cur, i)
        else:
            cur = None
    modes, sizes = defaultdict(int), defaultdict(int)
    for i in range(max(n, 0)):
        for m in info[i]["modes"]:
            modes[m] += 1
        for b in info[i]["bs"]:
            sizes[b] += 1
    out = {"found": max(n, 0), "clean": sum(clean), "modes": dict(modes),
           "batch_size_match": match,
           "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
           "step_spans": bool(steps)}
    if best[1] < best[0]:
        return {**out, "window": None, "rounds": 0, "durations_us": []}
    i0, i1 = best
    return {**out, "window": (starts[i0], starts[i1 + 1]), "rounds": i1 - i0 + 1,
            "durations_us": [starts[i + 1] - starts[i] for i in range(i0, i1 + 1)]}


# ---- host-side helpers -----------------------------------------------------------------------
def _threads(events: list[dict]) -> dict:
    by = defaultdict(list)
    for e in events:
        if e["cat"] in HOST_CATS:
            by[(e.get("pid"), e.get("tid"))].append(e)
    for evs in by.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    return by


def self_times(thread_events: list[dict]) -> list[float]:
    """Self time of each event of one thread (sorted by start, longer first): its duration
    minus the parts covered by its direct children (events nest on one thread)."""
    selfs = [e["dur"] for e in thread_events]
    stack: list[int] = []
    for i, e in enumerate(thread_events):
        while stack and (thread_events[stack[-1]]["ts"] + thread_events[stack[-1]]["dur"]
                         <= e["ts"]):
            stack.pop()
        if stack:
            p = thread_events[stack[-1]]
            selfs[stack[-1]] -= clip(e["ts"], e["ts"] + e["dur"], p["ts"], p["ts"] + p["dur"])
        stack.append(i)
    return [max(0.0, s) for s in selfs]


def _step_label(name: str) -> str:
    m = _STEP_RE.match(name)
    return f"step[{m.group(1)}]" if m else name


def launch_labels(thread_events: list[dict]) -> dict:
    """correlation id -> the host span a CUDA call of this thread ran in: the innermost
    ``step[MODE]`` span, else the innermost annotation, else ``(no span)``."""
    out, stack = {}, []
    for e in thread_events:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        if e["cat"] in RUNTIME_CATS:
            c = _corr(e)
            if c is not None:
                label = next((_step_label(s["name"]) for s in reversed(stack)
                              if s["name"].startswith("step[")), None)
                if label is None:
                    label = next((s["name"] for s in reversed(stack)
                                  if s["cat"] == "user_annotation"), "(no span)")
                out[c] = label
        if e["cat"] == "user_annotation":
            stack.append(e)
    return out


# ---- the analysis ----------------------------------------------------------------------------
def _rounds_cell(rounds: dict) -> str:
    match = rounds.get("batch_size_match", "exact")
    seen = "/".join(rounds.get("batch_sizes") or {})
    return str(rounds["measured"]) + ("" if match == "exact" else f" (near: bs {seen})")


def _per(x: float, n: int, scale: float = 1e-3) -> float:
    return round(x * scale / n, 4)


def analyze(trace: dict, batch_size: int | None = None, ours: dict | None = None,
            top: int = 25) -> dict:
    """Per-round breakdown of one trace (times in ms per round, counts per round)."""
    events = _complete_events(trace)
    rounds = find_rounds(events, batch_size)
    res = {"batch_size": batch_size, "rounds": {k: v for k, v in rounds.items()
                                                if k not in ("window", "durations_us")}}
    if rounds["window"] is None:
        res["error"] = (f"no whole clean round in the trace ({rounds['found']} rounds found, "
                        f"{rounds['clean']} clean; modes {rounds['modes']})")
        return res
    lo, hi = rounds["window"]
    n = rounds["rounds"]
    durs = sorted(rounds["durations_us"])
    res["rounds"].update(window_ms=round((hi - lo) / 1e3, 3), measured=n,
                         round_ms={"median": round(durs[len(durs) // 2] / 1e3, 4),
                                   "min": round(durs[0] / 1e3, 4),
                                   "max": round(durs[-1] / 1e3, 4)})
    wall = hi - lo

    # host: threads, launch paths, self times
    threads = _threads(events)
    launcher, label_of = {}, {}
    for evs in threads.values():
        for e in evs:
            if e["cat"] in RUNTIME_CATS and _corr(e) is not None:
                launcher[_corr(e)] = e["name"]
        label_of.update(launch_labels(evs))

    # GPU
    gpu = [e for e in events if e["cat"] in GPU_CATS
           and clip(e["ts"], e["ts"] + e["dur"], lo, hi) > 0]
    busy = union_length((max(e["ts"], lo), min(e["ts"] + e["dur"], hi)) for e in gpu)
    kern_sum = 0.0
    cats = defaultdict(lambda: [0.0, 0])
    names = defaultdict(lambda: {"us": 0.0, "calls": 0, "graph": 0, "cat": "", "spans": set()})
    stages = defaultdict(float)
    in_graph = eager = 0
    for e in gpu:
        t = clip(e["ts"], e["ts"] + e["dur"], lo, hi)
        started = lo <= e["ts"] < hi
        cat = kernel_category(e["name"], e["cat"], ours)
        cats[cat][0] += t
        cats[cat][1] += started
        kern_sum += t
        k = names[e["name"]]
        k["us"] += t
        k["calls"] += started
        k["cat"] = cat
        via = launcher.get(_corr(e))
        graph = via in GRAPH_LAUNCHES
        k["graph"] += started and graph
        if e["cat"] == "kernel" and started:
            in_graph += graph
            eager += not graph
        span = label_of.get(_corr(e), "(unknown launch)")
        k["spans"].add(span)
        stages[span] += t
    res["gpu"] = {"wall_ms": _per(wall, n), "busy_ms": _per(busy, n),
                  "idle_ms": _per(wall - busy, n), "busy_frac": round(busy / wall, 4),
                  "kernel_sum_ms": _per(kern_sum, n),
                  "kernels_in_graphs": round(in_graph / n, 2),
                  "kernels_eager": round(eager / n, 2)}
    res["categories"] = {c: {"ms": _per(cats[c][0], n), "calls": round(cats[c][1] / n, 2)}
                         for c in CATEGORIES if c in cats}
    res["stages_gpu_ms"] = {s: _per(v, n) for s, v in
                            sorted(stages.items(), key=lambda kv: -kv[1])}
    ranked = sorted(names.items(), key=lambda kv: -kv[1]["us"])
    res["top_kernels"] = [
        {"name": nm[:NAME_CHARS], "category": k["cat"], "ms": _per(k["us"], n),
         "calls": round(k["calls"] / n, 2),
         "us_per_call": round(k["us"] / k["calls"], 2) if k["calls"] else None,
         "in_graph_frac": round(k["graph"] / k["calls"], 3) if k["calls"] else None,
         "launched_from": sorted(k["spans"])[:4]} for nm, k in ranked[:top]]
    res["kernels_total"] = len(names)

    # host: ops by self time, spans, CUDA API
    ops = defaultdict(lambda: {"self_us": 0.0, "total_us": 0.0, "calls": 0, "cat": ""})
    api = defaultdict(lambda: [0.0, 0])
    busy_thread = {}
    for key, evs in threads.items():
        selfs = self_times(evs)
        top_level = 0.0
        depth_end = None
        for e, s in zip(evs, selfs):
            if not lo <= e["ts"] < hi:
                continue
            if depth_end is None or e["ts"] >= depth_end:
                top_level += e["dur"]
                depth_end = e["ts"] + e["dur"]
            o = ops[(e["cat"], e["name"] if not _STEP_RE.match(e["name"])
                     else _step_label(e["name"]))]
            o["self_us"] += s
            o["total_us"] += e["dur"]
            o["calls"] += 1
            o["cat"] = e["cat"]
            if e["cat"] in RUNTIME_CATS:
                api[e["name"]][0] += e["dur"]
                api[e["name"]][1] += 1
        if top_level:
            busy_thread[f"{key[0]}/{key[1]}"] = _per(top_level, n)
    ranked_ops = sorted(ops.items(), key=lambda kv: -kv[1]["self_us"])
    res["top_cpu_ops"] = [
        {"name": name[:NAME_CHARS], "kind": o["cat"], "self_ms": _per(o["self_us"], n),
         "total_ms": _per(o["total_us"], n), "calls": round(o["calls"] / n, 2)}
        for (_, name), o in ranked_ops[:top]]
    res["spans"] = {name: {"ms": _per(o["total_us"], n), "self_ms": _per(o["self_us"], n),
                           "calls": round(o["calls"] / n, 2)}
                    for (cat, name), o in sorted(ops.items(), key=lambda kv: -kv[1]["total_us"])
                    if cat == "user_annotation"}
    res["cuda_api"] = {name: {"calls": round(c / n, 2), "ms": _per(t, n)}
                       for name, (t, c) in sorted(api.items(), key=lambda kv: -kv[1][1])}

    def calls(names_):
        return round(sum(api[x][1] for x in names_ if x in api) / n, 2)

    sync = [x for x in api if "Synchronize" in x]
    res["host"] = {"thread_busy_ms": busy_thread,
                   "graph_launches": calls(GRAPH_LAUNCHES),
                   "kernel_launches": calls(KERNEL_LAUNCHES),
                   "syncs": calls(sync),
                   "sync_ms": _per(sum(api[x][0] for x in sync), n),
                   "cpu_ops": round(sum(o["calls"] for (c, _), o in ops.items()
                                        if c == "cpu_op") / n, 2)}
    return res


# ---- comparison and report -------------------------------------------------------------------
def _diff_rows(a: list | dict, b: list | dict, key: str, value: str, top: int) -> list[dict]:
    """Rows of ``b - a`` by name (lists of dicts with ``key``, or dicts name -> dict)."""
    da = {r[key]: r for r in a} if isinstance(a, list) else {k: {key: k, **v} for k, v in a.items()}
    db = {r[key]: r for r in b} if isinstance(b, list) else {k: {key: k, **v} for k, v in b.items()}
    rows = []
    for name in set(da) | set(db):
        va = (da.get(name) or {}).get(value) or 0.0
        vb = (db.get(name) or {}).get(value) or 0.0
        ca = (da.get(name) or {}).get("calls") or 0.0
        cb = (db.get(name) or {}).get("calls") or 0.0
        rows.append({key: name, "base": va, "other": vb, "diff": round(vb - va, 4),
                     "calls_base": ca, "calls_other": cb})
    rows.sort(key=lambda r: -abs(r["diff"]))
    return rows[:top]


def compare(base: dict, other: dict, top: int = 15) -> dict:
    """``other - base`` per round (e.g. Domino minus DFlash at one batch size). Kernel and op
    tables only hold each side's top N, so a name missing on one side counts as 0 there."""
    if "gpu" not in base or "gpu" not in other:
        return {"error": "one side has no analysis"}
    scal = {}
    for sect in ("gpu", "host"):
        for k, v in base[sect].items():
            if isinstance(v, (int, float)) and isinstance(other[sect].get(k), (int, float)):
                scal[f"{sect}.{k}"] = {"base": v, "other": other[sect][k],
                                       "diff": round(other[sect][k] - v, 4)}
    return {"scalars": scal,
            "categories": _diff_rows(base["categories"], other["categories"], "name", "ms", 99),
            "stages": _diff_rows({k: {"ms": v} for k, v in base["stages_gpu_ms"].items()},
                                 {k: {"ms": v} for k, v in other["stages_gpu_ms"].items()},
                                 "name", "ms", top),
            "kernels": _diff_rows(base["top_kernels"], other["top_kernels"], "name", "ms", top),
            "cpu_ops": _diff_rows(base["top_cpu_ops"], other["top_cpu_ops"], "name", "self_ms",
                                  top),
            "cuda_api": _diff_rows(base["cuda_api"], other["cuda_api"], "name", "ms", top)}


def _f(x, nd=3) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |",
           "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(head))) + " |"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c.replace("|", "/")
                              for c in r) + " |" for r in rows]
    return out


def markdown(results: dict, diffs: dict, base: str = "dflash", other: str = "domino",
             top: int = 10) -> list[str]:
    """Report lines: ``results[system][bs]`` = :func:`analyze` output, ``diffs[bs]`` =
    :func:`compare` of ``other`` against ``base``."""
    lines = []
    sizes = sorted({int(b) for r in results.values() for b in r})
    systems = list(results)
    lines += ["## Per round (ms per round; counts per round)", ""]
    rows = []
    for b in sizes:
        for s in systems:
            r = results[s].get(str(b))
            if not r or "gpu" not in r:
                rows.append([str(b), s, *["-"] * 9,
                             (r or {}).get("error", "not run")[:80]])
                continue
            g, h = r["gpu"], r["host"]
            rows.append([str(b), s, g["wall_ms"], g["busy_ms"], g["idle_ms"], g["kernel_sum_ms"],
                         g["kernels_in_graphs"], g["kernels_eager"], h["graph_launches"],
                         h["kernel_launches"], h["syncs"], _rounds_cell(r["rounds"])])
    lines += _table(["bs", "system", "wall", "GPU busy", "GPU idle", "kernel sum",
                     "kernels in graphs", "kernels eager", "graph launches", "eager launches",
                     "syncs", "rounds"], rows)
    for b in sizes:
        d = diffs.get(str(b))
        lines += ["", f"## Batch {b}: {other} minus {base}", ""]
        if not d or "scalars" not in d:
            lines.append(f"no comparison ({(d or {}).get('error', 'a side is missing')})")
            continue
        lines += ["GPU time by category (ms per round):", ""]
        lines += _table(["category", base, other, "diff", f"calls {base}", f"calls {other}"],
                        [[r["name"], r["base"], r["other"], r["diff"], r["calls_base"],
                          r["calls_other"]] for r in d["categories"]])
        lines += ["", "GPU time by the host span that launched it (ms per round):", ""]
        lines += _table(["span", base, other, "diff"],
                        [[r["name"], r["base"], r["other"], r["diff"]] for r in d["stages"]])
        lines += ["", f"Kernels with the largest difference (top {top}):", ""]
        lines += _table(["kernel", base, other, "diff", f"calls {base}", f"calls {other}"],
                        [[r["name"][:90], r["base"], r["other"], r["diff"], r["calls_base"],
                          r["calls_other"]] for r in d["kernels"][:top]])
        lines += ["", f"Host ops/spans by self time, largest difference (top {top}):", ""]
        lines += _table(["op", base, other, "diff", f"calls {base}", f"calls {other}"],
                        [[r["name"][:90], r["base"], r["other"], r["diff"], r["calls_base"],
                          r["calls_other"]] for r in d["cpu_ops"][:top]])
        lines += ["", "CUDA API (ms per round; calls per round):", ""]
        lines += _table(["call", base, other, "diff", f"calls {base}", f"calls {other}"],
                        [[r["name"], r["base"], r["other"], r["diff"], r["calls_base"],
                          r["calls_other"]] for r in d["cuda_api"][:top]])
    for s in systems:
        for b in sizes:
            r = results[s].get(str(b))
            if not r or "top_kernels" not in r:
                continue
            lines += ["", f"### {s}, batch {b}: top {top} kernels and host ops", ""]
            lines += _table(["kernel", "category", "ms", "calls", "us/call", "in graph",
                             "launched from"],
                            [[k["name"][:90], k["category"], k["ms"], k["calls"],
                              k["us_per_call"], k["in_graph_frac"],
                              ", ".join(k["launched_from"])] for k in r["top_kernels"][:top]])
            lines += [""]
            lines += _table(["host op / span", "kind", "self ms", "total ms", "calls"],
                            [[o["name"][:90], o["kind"], o["self_ms"], o["total_ms"],
                              o["calls"]] for o in r["top_cpu_ops"][:top]])
    return lines
