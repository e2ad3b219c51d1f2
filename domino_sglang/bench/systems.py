"""The systems of the side-by-side benchmark, their SGLang flags, and the GPU memory plan.

:func:`system_flags` is the one place that says how each system is started (the lead adjusts
flags here). A *pair* is a folder with ``target/``, ``drafter-domino/`` and ``drafter-dflash/``
(``assets/domino-tiny``, or an inflated 8B-cost pair from ``python -m
domino_sglang.bench.inflate``).

Memory (SGLang 0.5.17, ``kv_cache_configurator._profile_available_bytes``): a server's KV budget
is ``free_now - (1 - mem_fraction_static) * free_before_its_model_load``, capped by
``--max-total-tokens``. With several servers starting in parallel on one GPU, the worst case for
one server is that every other server has loaded everything between its two readings, so every
server of a wave must have ``mem_fraction_static >= sum(needs) / gpu_memory``; the KV pool itself
stays at the ``--max-total-tokens`` cap, so a high fraction takes no more memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "assets" / "domino-tiny"

SYSTEMS = {
    "ar": {"label": "AR (plain decoding)", "spec": None},
    "dflash": {"label": "DFlash: our worker, head-off drafter-dflash (same backbone), whole "
                        "block every round (as stock DFLASH)", "spec": "domino",
               "draft": "drafter-dflash", "env": {"DOMINO_ADAPTIVE": "0"}},
    "domino": {"label": "Domino chain (drafter-domino), adaptive verify width (the default)",
               "spec": "domino", "draft": "drafter-domino"},
    "domino_fixed": {"label": "Domino chain (drafter-domino), whole block every round "
                              "(DOMINO_ADAPTIVE=0)", "spec": "domino",
                     "draft": "drafter-domino", "env": {"DOMINO_ADAPTIVE": "0"}},
    "domino_tree": {"label": "Domino tree (drafter-domino, EXPERIMENTAL)", "spec": "domino",
                    "draft": "drafter-domino", "tree": True},
    "ngram": {"label": "NGRAM (SGLang n-gram lookup)", "spec": "NGRAM"},
}
ORDER = ["ar", "ngram", "dflash", "domino", "domino_fixed", "domino_tree"]
SIMULATED = ("dflash", "domino", "domino_fixed")  # systems --simulate-acc-len applies to (tree refuses it)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4, "auto": 2}


@dataclass(frozen=True)
class Pair:
    name: str
    root: Path
    target: Path
    drafters: dict  # "drafter-domino" / "drafter-dflash" -> Path
    block_size: int | None
    exists: bool

    @property
    def target_config(self) -> dict:
        return _read_json(self.target / "config.json")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def resolve_pair(spec: str) -> Pair:
    """``tiny`` -> ``assets/domino-tiny``; anything else: a pair folder."""
    root = TINY if spec == "tiny" else Path(spec)
    drafters = {d: root / d for d in ("drafter-domino", "drafter-dflash")}
    cfg = _read_json(drafters["drafter-domino"] / "config.json")
    block = (cfg.get("dflash_config") or {}).get("block_size") or cfg.get("block_size")
    exists = (root / "target" / "config.json").is_file() and all(
        (p / "config.json").is_file() for p in drafters.values())
    return Pair("tiny" if spec == "tiny" else root.name, root, root / "target", drafters,
                block, exists)


@dataclass
class ServerOpts:
    dtype: str = "bfloat16"
    max_total_tokens: int = 65536
    max_running_requests: int = 64
    cuda_graph_bs: tuple = (1, 2, 4, 8, 16, 32, 64)
    chunked_prefill_size: int = 4096
    tree_topk: int = 4
    tree_budget: int = 32
    tree_style: str = "flags"  # "flags" (--speculative-eagle-topk/num-draft-tokens) or "env"
    seed: int = 0
    skip_tokenizer_init: bool = True
    simulate_method: str | None = None  # SGLANG_SIMULATE_ACC_METHOD (None: SGLang's default)
    extra_args: list = field(default_factory=list)


@dataclass(frozen=True)
class Instance:
    """One server: a system, optionally with a simulated acceptance length, or (tree mode)
    its own ``(topk, budget)`` instead of the run's."""
    system: str
    simulate_acc_len: float | None = None
    tree: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        if self.tree is not None:
            return f"{self.system}-{self.tree[0]}x{self.tree[1]}"
        return self.system if self.simulate_acc_len is None \
            else f"{self.system}@sim{self.simulate_acc_len:g}"


def parse_tree_configs(text: str) -> list[tuple[int, int]]:
    """``"2x16,4x32"`` -> ``[(2, 16), (4, 32)]`` (tree branching x node budget); a bad entry
    raises ValueError naming it."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        k, sep, b = item.lower().partition("x")
        if not sep or not k.isdigit() or not b.isdigit():
            raise ValueError(f"{item!r}: expected TOPKxBUDGET, e.g. 4x32")
        topk, budget = int(k), int(b)
        if topk < 2 or budget < 2:
            raise ValueError(f"{item!r}: tree mode needs topk >= 2 (topk 1 is chain mode) and "
                             "a budget >= 2 nodes")
        if (topk, budget) in out:
            raise ValueError(f"{item!r}: given twice")
        out.append((topk, budget))
    if not out:
        raise ValueError(f"{text!r}: no tree configuration")
    return out


def tree_num_nodes(block: int, topk: int, budget: int) -> int:
    """The verify width N of tree mode (as ``core.tree.tree_num_nodes``)."""
    return min(budget, 1 + (block - 1) * topk)


def tree_flags(block: int, topk: int, budget: int) -> list[str]:
    """Tree mode on SGLang's own flags: branching ``topk`` and, as the draft width, the node
    count the plugin builds for ``budget``."""
    return ["--speculative-eagle-topk", str(topk), "--speculative-num-draft-tokens",
            str(tree_num_nodes(block, topk, budget))]


def _with_tree(opts: ServerOpts, tree: tuple[int, int] | None) -> ServerOpts:
    """``opts`` with one server's own tree ``(topk, budget)``, if it has one."""
    return opts if tree is None else replace(opts, tree_topk=int(tree[0]),
                                             tree_budget=int(tree[1]))


def system_flags(system: str, pair: Pair, opts: ServerOpts, mem_fraction: float,
                 simulate_acc_len: float | None = None,
                 tree: tuple[int, int] | None = None) -> tuple[list[str], dict]:
    """(SGLang flags, extra environment) of one system on ``pair``; ``tree``: this server's
    ``(topk, budget)`` in place of ``opts.tree_topk`` / ``opts.tree_budget``."""
    opts = _with_tree(opts, tree)
    if system not in SYSTEMS:
        raise ValueError(f"system {system!r}: expected one of {list(SYSTEMS)}")
    sd = SYSTEMS[system]
    flags = ["--model-path", str(pair.target), "--dtype", opts.dtype,
             "--attention-backend", "triton", "--sampling-backend", "pytorch",
             "--disable-prefill-cuda-graph",
             "--cuda-graph-bs", *[str(b) for b in opts.cuda_graph_bs],
             "--mem-fraction-static", f"{mem_fraction:.3f}",
             "--max-total-tokens", str(opts.max_total_tokens),
             "--max-running-requests", str(opts.max_running_requests),
             "--chunked-prefill-size", str(opts.chunked_prefill_size),
             "--random-seed", str(opts.seed), "--decode-log-interval", "40"]
    if opts.skip_tokenizer_init:
        flags.append("--skip-tokenizer-init")
    env: dict[str, str] = dict(sd.get("env") or {})
    if sd["spec"]:
        flags += ["--speculative-algorithm", sd["spec"]]
    if sd.get("draft"):
        flags += ["--speculative-draft-model-path", str(pair.drafters[sd["draft"]])]
        block = pair.block_size or 16
        if sd.get("tree"):
            flags += ["--grammar-backend", "none"]
            if opts.tree_style == "flags":
                flags += tree_flags(block, opts.tree_topk, opts.tree_budget)
            elif opts.tree_style == "env":  # the old switches (the plugin sets N itself)
                env.update(DOMINO_TREE_TOPK=str(opts.tree_topk),
                           DOMINO_TREE_BUDGET=str(opts.tree_budget))
            else:
                raise ValueError(f"tree_style={opts.tree_style!r}: expected 'flags' or 'env'")
        else:
            flags += ["--speculative-num-draft-tokens", str(block)]
    if simulate_acc_len is not None:
        if system not in SIMULATED:
            raise ValueError(f"--simulate-acc-len applies to {SIMULATED}, not {system!r}")
        env["SGLANG_SIMULATE_ACC_LEN"] = f"{simulate_acc_len:g}"
        if opts.simulate_method:
            env["SGLANG_SIMULATE_ACC_METHOD"] = opts.simulate_method
    return flags + list(opts.extra_args), env


# ---- memory ---------------------------------------------------------------------------------
def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def kv_bytes_per_token(cfg: dict, dtype: str) -> int:
    if not cfg:
        return 0
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return (cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", cfg["num_attention_heads"])
            * head_dim * 2 * DTYPE_BYTES.get(dtype, 2))


def server_memory(system: str, pair: Pair, opts: ServerOpts, overhead_gb: float = 1.5,
                  tree: tuple[int, int] | None = None) -> dict:
    """Estimated device memory of one server (GB): weights (safetensors sizes), the KV pool
    at the ``max_total_tokens`` cap (target + drafter layers), the Domino head workspace
    (fp32 tables: ~16 bytes x vocab x max batch x block, cf. 2375.6 MiB logged at the 8B shape
    and batch 64), and a fixed + 5 % of weights overhead (CUDA context, graphs,
    activations). ``tree``: as in :func:`system_flags`."""
    opts = _with_tree(opts, tree)
    sd = SYSTEMS[system]
    tcfg = pair.target_config
    weights = _weights_bytes(pair.target)
    kv = kv_bytes_per_token(tcfg, opts.dtype)
    head = 0
    if sd.get("draft"):
        d = pair.drafters[sd["draft"]]
        weights += _weights_bytes(d)
        kv += kv_bytes_per_token(_read_json(d / "config.json"), opts.dtype)
        width = pair.block_size or 16
        if sd.get("tree"):
            width = tree_num_nodes(width, opts.tree_topk, opts.tree_budget)
        head = 16 * tcfg.get("vocab_size", 0) * opts.max_running_requests * width
    gb = 1e9
    out = {"weights_gb": weights / gb, "kv_gb": kv * opts.max_total_tokens / gb,
           "head_gb": head / gb, "overhead_gb": overhead_gb + 0.05 * weights / gb}
    out["total_gb"] = sum(out.values())
    return {k: round(v, 3) for k, v in out.items()}


def mem_fraction_for(total_need_gb: float, gpu_gb: float, margin: float = 0.05,
                     floor: float = 0.3, ceiling: float = 0.92) -> float | None:
    """``mem_fraction_static`` for every server of a wave needing ``total_need_gb`` together;
    None when it does not fit under ``ceiling``."""
    f = max(floor, total_need_gb / gpu_gb + margin)
    return round(f, 3) if f <= ceiling else None


def plan_waves(instances: list[Instance], need_gb: dict, gpu_gb: float,
               persistent: str | None = "ar", ceiling: float = 0.87) -> list[list[Instance]]:
    """Pack the instances into waves that fit ``gpu_gb`` (first fit, in the given order).

    The ``persistent`` system (AR, the baseline and the tie oracle) is started in the first
    wave and stays up, so it counts in every wave."""
    keep = [i for i in instances if i.system == persistent and i.simulate_acc_len is None][:1]
    rest = [i for i in instances if i not in keep]
    base = sum(need_gb[i.name] for i in keep)
    waves: list[list[Instance]] = []
    cur, used = [], base
    for inst in rest:
        n = need_gb[inst.name]
        if base + n > ceiling * gpu_gb:
            raise ValueError(f"{inst.name} needs {n:.1f} GB (+{base:.1f} GB of {persistent}): "
                             f"does not fit a {gpu_gb:.0f} GB GPU")
        if cur and used + n > ceiling * gpu_gb:
            waves.append(cur)
            cur, used = [], base
        cur.append(inst)
        used += n
    if cur or not waves:
        waves.append(cur)
    if keep:
        waves[0] = keep + waves[0]
    return waves
