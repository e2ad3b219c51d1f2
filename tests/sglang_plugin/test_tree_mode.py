"""EXPERIMENTAL tree mode on SGLang's own flags (docs/tree_mode.md): ``--speculative-eagle-topk``
(branching), ``--speculative-num-draft-tokens`` (node budget), ``--speculative-dflash-block-size``
(B); server-argument resolution (speculative_num_draft_tokens = N, speculative_dflash_block_size
= B, draft runner width B), the deprecated DOMINO_TREE_* mapping, every refusal, chain mode
unchanged, and the factory + mask-policy hook (in a subprocess: the hook patches SGLang
globals). No worker is constructed (that needs a GPU)."""

import importlib.util
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from _pair import write_pair
from _logs import logged

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def sg():
    from domino_sglang.sglang_plugin import register
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    assert register()
    return SpeculativeAlgorithm


@pytest.fixture
def algo(sg):
    return sg.from_string("domino")


@pytest.fixture
def tree_env(monkeypatch):
    """The deprecated DOMINO_TREE_TOPK / DOMINO_TREE_BUDGET (unset by default)."""
    def set_env(topk=None, budget=None):
        for name, val in (("DOMINO_TREE_TOPK", topk), ("DOMINO_TREE_BUDGET", budget)):
            if val is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(val))
    set_env()
    monkeypatch.delenv("SGLANG_SIMULATE_ACC_LEN", raising=False)
    return set_env


@contextmanager
def published(sa):
    """``sa`` as the process's published ServerArgs (what the scheduler does), then restored."""
    from sglang.srt.runtime_context import get_context

    with get_context().preserve_config():
        get_context().set_server_args(sa)
        yield


# tree mode v1 needs these two (the defaults: triton on a GPU-less box, xgrammar)
TREE_FLAGS = ("--attention-backend", "triton", "--grammar-backend", "none")


def _tree(topk, budget):
    return ("--speculative-eagle-topk", str(topk), "--speculative-num-draft-tokens", str(budget))


def _resolve(target, draft, *extra, algo="domino"):
    from sglang.srt.server_args import prepare_server_args

    argv = ["--model-path", target, "--speculative-algorithm", algo, "--device", "cuda",
            "--skip-tokenizer-init", "--speculative-draft-model-path", draft]
    return prepare_server_args(argv + list(extra))


# ---- resolution -----------------------------------------------------------------------------
@pytest.mark.sglang
@pytest.mark.parametrize("topk, budget, extra, b, n", [
    (4, 16, (), 8, 16),                                            # budget-limited
    (2, 64, (), 8, 15),                                            # full tree: 1 + 7*2
    (3, 8, (), 8, 8),                                              # N == B
    (4, 16, ("--speculative-dflash-block-size", "6"), 6, 16),      # smaller draft block
    (8, 64, ("--attention-backend", "flashinfer"), 8, 57),         # the largest tree
])
def test_tree_resolution(algo, tiny_pair, tree_env, topk, budget, extra, b, n):
    from domino_sglang.core.tree import tree_num_nodes
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    target, draft = tiny_pair
    sa = _resolve(target, draft, *TREE_FLAGS, *_tree(topk, budget), *extra)
    assert n == tree_num_nodes(b, topk, budget)
    assert sa.speculative_num_draft_tokens == n and sa.speculative_dflash_block_size == b
    assert sa.speculative_eagle_topk == 1 and sa.speculative_num_steps == 1
    assert sa.page_size == 1 and sa.grammar_backend == "none"
    cfg = serve_config_of(sa)
    assert (cfg.tree_topk, cfg.tree_budget, cfg.block_size, cfg.num_verify_tokens) == \
        (topk, budget, b, n)
    assert (cfg.topk_source, cfg.budget_source) == ("--speculative-eagle-topk",
                                                    "--speculative-num-draft-tokens")
    # the draft runner keeps width B, the target verifies N (resolve_num_tokens_per_req), once
    # the args are published in the process (as the scheduler does); the algorithm is stateless
    from sglang.srt.speculative.spec_utils import resolve_num_tokens_per_req

    with published(sa):
        assert algo.get_num_tokens_per_req_for_target_verify(n, True) == b
        assert algo.get_num_tokens_per_req_for_target_verify(n, False) == n
        for is_draft, width in ((True, b), (False, n)):
            assert resolve_num_tokens_per_req(phase="target_verify", server_args=sa,
                                              spec_algorithm=algo,
                                              is_draft_worker=is_draft) == width


@pytest.mark.sglang
def test_deprecated_env_is_mapped_and_flags_win(algo, tiny_pair, tree_env):
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    target, draft = tiny_pair
    tree_env(4, 16)
    with logged("domino_sglang.sglang_plugin.serve_config") as log:
        sa = _resolve(target, draft, *TREE_FLAGS)
    text = "\n".join(log)
    assert (sa.speculative_dflash_block_size, sa.speculative_num_draft_tokens) == (8, 16)
    cfg = serve_config_of(sa)
    assert (cfg.topk_source, cfg.budget_source) == ("DOMINO_TREE_TOPK", "DOMINO_TREE_BUDGET")
    assert "DOMINO_TREE_TOPK=4 is DEPRECATED" in text
    assert "DOMINO_TREE_BUDGET=16 is DEPRECATED" in text
    with logged("domino_sglang.sglang_plugin.serve_config") as log:
        sa = _resolve(target, draft, *TREE_FLAGS, *_tree(2, 12))  # the flags win
    assert (serve_config_of(sa).tree_topk, sa.speculative_num_draft_tokens) == (2, 12)
    assert any("DOMINO_TREE_TOPK=4 is ignored" in m for m in log), log


@pytest.mark.sglang
def test_tree_options_from_the_draft_config(algo, tmp_path, tree_env):
    target, draft = write_pair(tmp_path, drafter_edit=lambda c: c["dflash_config"].update(
        tree_topk=2, tree_budget=10))
    sa = _resolve(target, draft, *TREE_FLAGS)  # drafter defaults
    assert (sa.speculative_dflash_block_size, sa.speculative_num_draft_tokens) == (8, 10)
    sa = _resolve(target, draft, *TREE_FLAGS, *_tree(3, 12))  # flags win over dflash_config
    assert (sa.speculative_dflash_block_size, sa.speculative_num_draft_tokens) == (8, 12)
    sa = _resolve(target, draft, "--speculative-eagle-topk", "1")  # chain: defaults unused
    assert sa.speculative_num_draft_tokens == 8 and sa.speculative_dflash_block_size is None


@pytest.mark.sglang
def test_chain_resolution_unchanged_after_tree(algo, tiny_pair, tree_env):
    """A chain resolution after a tree one (same process) is DFLASH's again, draft width too."""
    target, draft = tiny_pair
    tree_sa = _resolve(target, draft, *TREE_FLAGS, *_tree(4, 16))
    a, b = _resolve(target, draft), _resolve(target, draft, algo="DFLASH")
    va, vb = vars(a), vars(b)
    assert sorted(k for k in va if va[k] != vb.get(k)) == [
        "_domino_serve_config", "model_config", "random_seed", "speculative_algorithm",
        "warmups"]
    assert a.speculative_num_draft_tokens == 8 and a.speculative_dflash_block_size is None
    with published(a):
        assert algo.get_num_tokens_per_req_for_target_verify(8, True) == 8
    with published(tree_sa):
        assert algo.get_num_tokens_per_req_for_target_verify(16, True) == 8
        assert algo.get_num_tokens_per_req_for_target_verify(8, True) == 8  # not this width
    c = _resolve(target, draft, "--speculative-eagle-topk", "1",
                 "--speculative-num-draft-tokens", "4")  # chain: the flag is the block
    assert c.speculative_num_draft_tokens == 4


# ---- refusals (each names the flag / variable and its value) --------------------------------
@pytest.mark.sglang
@pytest.mark.parametrize("case, env, extra, match", [
    ("topk too large", None, _tree(9, 16), r"--speculative-eagle-topk 9.*\[2, 8\]"),
    ("budget too large", None, _tree(4, 65), r"--speculative-num-draft-tokens 65.*at most 64"),
    ("budget too small", None, _tree(4, 1), r"--speculative-num-draft-tokens 1.*>= 2"),
    ("budget below B", None, _tree(4, 6),
     r"--speculative-num-draft-tokens 6.*below the draft block size B=8"),
    ("budget below smaller B", None,
     _tree(4, 5) + ("--speculative-dflash-block-size", "6"),
     r"--speculative-num-draft-tokens 5.*B=6"),
    ("topk without budget", None, ("--speculative-eagle-topk", "4"),
     r"--speculative-eagle-topk 4 asks for .*needs a node budget.*--speculative-num-draft-tokens"),
    ("env topk too large", (9, 16), (), r"DOMINO_TREE_TOPK=9.*\[2, 8\]"),
    ("env budget without topk", (None, 16), (), r"DOMINO_TREE_BUDGET=16 only applies to tree"),
    ("env topk not an int", ("x", 16), (), r"DOMINO_TREE_TOPK='x'.*integer"),
    ("fa3", None, _tree(4, 16) + ("--attention-backend", "fa3"),
     r"--attention-backend fa3.*triton"),
    ("prefill fa3", None, _tree(4, 16) + ("--prefill-attention-backend", "fa3"),
     r"--prefill-attention-backend fa3"),
    ("page size", None, _tree(4, 16) + ("--page-size", "16"), r"--page-size 16.*--page-size 1"),
    ("draft window", None, _tree(4, 16) + ("--speculative-draft-window-size", "64"),
     r"--speculative-draft-window-size 64"),
    ("block too large", None, _tree(4, 16) + ("--speculative-dflash-block-size", "12"),
     r"--speculative-dflash-block-size 12.*\[2, 8\]"),
    ("tp 2", None, _tree(4, 16) + ("--tp-size", "2", "--page-size", "1"),
     r"--tp-size 2 with tree mode \(--speculative-eagle-topk 4\).*--tp-size 1 only"),
])
def test_tree_refusals(algo, tiny_pair, tree_env, case, env, extra, match):
    target, draft = tiny_pair
    if env is not None:
        tree_env(*env)
    flags = TREE_FLAGS if "--attention-backend" not in extra else ("--grammar-backend", "none")
    with pytest.raises(ValueError, match=match):
        _resolve(target, draft, *flags, *extra)


@pytest.mark.sglang
def test_tree_refuses_grammar_backend(algo, tiny_pair, tree_env):
    target, draft = tiny_pair
    with pytest.raises(ValueError, match=r"--grammar-backend xgrammar.*--grammar-backend none"):
        _resolve(target, draft, "--attention-backend", "triton", *_tree(4, 16))


@pytest.mark.sglang
def test_tree_refuses_simulated_acceptance(algo, tiny_pair, tree_env, monkeypatch):
    target, draft = tiny_pair
    monkeypatch.setenv("SGLANG_SIMULATE_ACC_LEN", "3")
    with pytest.raises(ValueError, match=r"SGLANG_SIMULATE_ACC_LEN=3: .*chain-only"):
        _resolve(target, draft, *TREE_FLAGS, *_tree(4, 16))


@pytest.mark.sglang
def test_tree_refuses_mamba_targets(algo, tiny_pair, tree_env, monkeypatch):
    from sglang.srt.configs import hybrid_arch

    target, draft = tiny_pair
    monkeypatch.setattr(hybrid_arch, "mambaish_config", lambda mc: object())
    with pytest.raises(ValueError, match=r"--model-path .*Mamba / hybrid"):
        _resolve(target, draft, *TREE_FLAGS, *_tree(4, 16))
    _resolve(target, draft)  # chain mode does not ask


@pytest.mark.parametrize("backend", ["trtllm_mha", "trtllm_mla", "fa3", "fa4", "flashmla",
                                     "torch_native", None])
def test_tree_attention_backends_refused(tiny_pair, backend):
    """Backends SGLang refuses on a CPU box before our check, tested on the check itself."""
    from domino_sglang.sglang_plugin.serve_config import DominoServeConfig
    from domino_sglang.sglang_plugin.validate import DominoServerArgsError, check_tree_server_args

    target, _ = tiny_pair
    cfg = DominoServeConfig(block_size=8, num_verify_tokens=16, drafter_block_size=8,
                            tree_topk=4, tree_budget=16, topk_source="--speculative-eagle-topk",
                            budget_source="--speculative-num-draft-tokens")
    sa = SimpleNamespace(model_path=target, attention_backend=backend,
                         prefill_attention_backend=None, decode_attention_backend=None,
                         page_size=1, speculative_draft_window_size=None, grammar_backend="none")
    with pytest.raises(DominoServerArgsError, match=f"--attention-backend {backend}"):
        check_tree_server_args(sa, cfg)
    for ok in ("triton", "flashinfer"):
        check_tree_server_args(SimpleNamespace(**{**vars(sa), "attention_backend": ok}), cfg)
    if backend is not None:  # (an unset split flag falls back to --attention-backend)
        with pytest.raises(DominoServerArgsError, match=f"--decode-attention-backend {backend}"):
            check_tree_server_args(SimpleNamespace(**{**vars(sa), "attention_backend": "triton",
                                                      "decode_attention_backend": backend}), cfg)


# ---- factory + hook (subprocess: the hook patches SGLang globals) -----------------------------
_FACTORY = """
import os, sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from sglang.srt.plugins import load_plugins
load_plugins()  # what every scheduler process runs first: register() + apply_hooks()
from sglang.srt.runtime_context import get_context
from sglang.srt.server_args import prepare_server_args
from sglang.srt.speculative import dflash_utils
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
import domino_sglang.sglang_plugin as plugin
from domino_sglang.sglang_plugin.hooks import is_installed
from domino_sglang.sglang_plugin.serve_config import MissingServeConfigError

class TritonAttnBackend:  # name-matched stand-in: DFlash captures it without a mask
    pass

argv = ["--model-path", {target!r}, "--speculative-algorithm", "domino", "--device", "cuda",
        "--skip-tokenizer-init", "--speculative-draft-model-path", {draft!r},
        "--attention-backend", "triton", "--grammar-backend", "none"]
algo = SpeculativeAlgorithm.from_string("domino")
orig_box = [dflash_utils.resolve_dflash_verify_mask_policy]  # HookRegistry rebinds module globals

# 1) chain server: chain worker, no mask hook registered or applied, DFLASH's mask policy
sa = prepare_server_args(argv)
get_context().set_server_args(sa)  # the scheduler publishes its args first
cls = algo.create_worker(sa)
from domino_sglang.sglang_plugin.worker import DominoWorkerV2
assert cls is DominoWorkerV2, cls
assert dflash_utils.resolve_dflash_verify_mask_policy is orig_box[0]
assert not hasattr(orig_box[0], "__wrapped__")
assert "domino_sglang.sglang_plugin.tree_worker" not in sys.modules
assert dflash_utils.resolve_dflash_verify_mask_policy(TritonAttnBackend()) == ("TritonAttnBackend", False)
assert algo.get_num_tokens_per_req_for_target_verify(8, True) == 8
print("CHAIN ok")

# 2) tree server from the flags (no environment), as a tree launcher hands the scheduler
import pickle
sa = pickle.loads(pickle.dumps(prepare_server_args(argv + ["--speculative-eagle-topk", "4",
                                                           "--speculative-num-draft-tokens", "16"])))
get_context().set_server_args(sa)
cls = algo.create_worker(sa)
from domino_sglang.sglang_plugin import tree_worker
assert cls is tree_worker.DominoTreeWorkerV2, cls
assert algo.get_num_tokens_per_req_for_target_verify(16, True) == 8
assert algo.get_num_tokens_per_req_for_target_verify(16, False) == 16
patched = dflash_utils.resolve_dflash_verify_mask_policy
assert patched is not orig_box[0] and patched.__wrapped__ is orig_box[0]
assert patched(TritonAttnBackend()) == ("TritonAttnBackend", True)
assert algo.create_worker(sa) is cls  # idempotent
assert is_installed(plugin.TREE_MASK_HOOK_TARGET, tree_worker.tree_mask_policy)
assert patched.__wrapped__ is orig_box[0]  # wrapped once
# the same (applied) hook answers from the published config: a chain server keeps DFlash's
get_context().set_server_args(prepare_server_args(argv))
assert patched(TritonAttnBackend()) == ("TritonAttnBackend", False)
print("TREE ok")

# 3) ServerArgs resolved without the plugin's hook carry no serve config: refused
del sa._domino_serve_config
try:
    algo.create_worker(sa)
except MissingServeConfigError as exc:
    assert "carry no Domino serve configuration" in str(exc), exc
    print("MISSING ok")
"""


@pytest.mark.sglang
def test_factory_and_mask_hook_only_in_tree_mode(tmp_path):
    target, draft = write_pair(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOMINO_TREE_TOPK", "DOMINO_TREE_BUDGET", "SGLANG_SIMULATE_ACC_LEN")}
    env["SGLANG_PLUGINS"] = "domino"
    code = _FACTORY.format(here=str(HERE), target=target, draft=draft)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180)
    lines = [x for x in out.stdout.splitlines() if x.endswith(" ok")]
    assert lines == ["CHAIN ok", "TREE ok", "MISSING ok"], (out.stdout[-2000:],
                                                           out.stderr[-4000:])


# ---- launch/serve.py ------------------------------------------------------------------------
def _serve_module():
    spec = importlib.util.spec_from_file_location("domino_serve", ROOT / "launch/serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_serve_tree_flags(tiny_pair, capsys):
    serve = _serve_module()
    _, draft = tiny_pair
    base = ["--model", "m", "--draft", draft, "--print-command"]
    assert serve.main(base) == 0
    chain = capsys.readouterr().out.split()
    assert chain[chain.index("--speculative-num-draft-tokens") + 1] == "8"
    assert "--grammar-backend" not in chain and "--speculative-dflash-block-size" not in chain
    assert serve.main(base + ["--tree-topk", "4", "--tree-budget", "16"]) == 0
    tree = capsys.readouterr().out.split()
    assert tree[tree.index("--speculative-num-draft-tokens") + 1] == "16"  # the node budget
    assert tree[tree.index("--speculative-eagle-topk") + 1] == "4"
    assert not any(t.startswith("DOMINO_TREE") for t in tree)
    assert tree[tree.index("--speculative-dflash-block-size") + 1] == "8"
    assert tree[tree.index("--grammar-backend") + 1] == "none"
    assert tree[tree.index("--page-size") + 1] == "1"
    assert tree[tree.index("--attention-backend") + 1] == "triton"
    with pytest.raises(SystemExit):
        serve.main(base + ["--tree-topk", "4"])  # a budget is required
    with pytest.raises(SystemExit):
        serve.main(base + ["--tree-topk", "4", "--tree-budget", "16",
                           "--attention-backend", "fa3"])


# ---- the tree worker's verify mask ------------------------------------------------------------
@pytest.mark.sglang
def test_tree_mask_goes_into_the_backends_verify_buffer(sg):
    """The tree worker writes the FULL-layout mask straight into the target backend's
    preallocated verify mask when the batch fits (no per-round host read of its size, as
    SGLang's EAGLE does), and falls back to an allocated mask otherwise."""
    import torch
    from sglang.srt.layers.attention.verify_mask import VerifyMask
    from sglang.srt.speculative.eagle_utils import TreeMaskMode

    from domino_sglang.sglang_plugin import tree_glue as tg
    from domino_sglang.sglang_plugin.tree_worker import DominoTreeWorkerV2

    w = object.__new__(DominoTreeWorkerV2)
    buf = torch.zeros(4 * 3 * (20 + 3), dtype=torch.uint8)
    backend = SimpleNamespace(verify_mask=VerifyMask(buffer=buf, mode=TreeMaskMode.FULL_MASK,
                                                     max_bs=4))
    w._target_worker = SimpleNamespace(model_runner=SimpleNamespace(attn_backend=backend))
    assert w._verify_mask_buffer(4) is buf and w._verify_mask_buffer(5) is None
    backend.verify_mask = VerifyMask(buffer=buf, mode=TreeMaskMode.QLEN_ONLY, max_bs=4)
    assert w._verify_mask_buffer(1) is None
    backend.verify_mask = VerifyMask(buffer=buf, mode=TreeMaskMode.FULL_MASK, max_bs=4,
                                     is_read=False)
    assert w._verify_mask_buffer(1) is None
    backend.verify_mask = None
    assert w._verify_mask_buffer(1) is None
    # what lands in the buffer is the allocated mask, at the offsets the backend reads
    parents = torch.tensor([[-1, 0, 0], [-1, 0, 1]])
    seq = torch.tensor([5, 2])
    alloc = tg.build_tree_verify_tensors(parents.clone(), parents, seq, block_size=3,
                                         impl="triton")
    into = tg.build_tree_verify_tensors(parents.clone(), parents, seq, block_size=3,
                                        impl="triton", mask_out=buf)
    assert into.custom_mask.data_ptr() == buf.data_ptr()
    n = alloc.custom_mask.numel()
    assert torch.equal(buf[:n].bool(), alloc.custom_mask.bool())


# ---- SGLang's FA3 default without FA3 kernels (the offline bundle) -----------------------------
@pytest.mark.sglang
@pytest.mark.parametrize("fa3_loads", [False, True])
def test_default_fa3_without_fa3_kernels_falls_back_to_triton(algo, tiny_pair, tree_env,
                                                              monkeypatch, fa3_loads):
    """No --attention-backend on a Hopper GPU: SGLang declares fa3. Where sgl-kernel cannot load
    FA3 (the README's launch command failed so on the offline bundle: "Can not import FA3"),
    the plugin declares triton for the target and the draft, and says so; where FA3 loads, or a
    backend was given, nothing changes."""
    from sglang.srt.server_args import ServerArgs

    from domino_sglang.sglang_plugin import validate

    target, draft = tiny_pair
    monkeypatch.setattr(ServerArgs, "_get_default_attn_backend", lambda self, *a: "fa3")
    monkeypatch.setattr(validate, "fa3_import_error",
                        lambda: None if fa3_loads else "ImportError: no flash_ops")
    with logged("domino_sglang.sglang_plugin.validate") as log:
        sa = _resolve(target, draft)
    want = "fa3" if fa3_loads else "triton"
    assert sa.attention_backend == want and sa.speculative_draft_attention_backend == want
    assert any("cannot load FA3 (ImportError: no flash_ops): using --attention-backend triton"
               in m for m in log) is not fa3_loads
    with logged("domino_sglang.sglang_plugin.validate") as log:
        sa = _resolve(target, draft, "--attention-backend", "flashinfer")
    assert sa.attention_backend == "flashinfer" and not any("FA3" in m for m in log)
