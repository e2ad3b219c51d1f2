"""EXPERIMENTAL tree mode made reachable (docs/tree_mode.md): server-argument resolution
(speculative_num_draft_tokens = N, speculative_dflash_block_size = B, draft runner width B),
every refusal, chain mode unchanged, and the factory + mask-policy hook (in a subprocess: the
hook patches SGLang globals). No worker is constructed (that needs a GPU)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import write_pair

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def sg():
    pytest.importorskip("sglang")
    from domino_sglang.sglang_plugin import register
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    assert register()
    return SpeculativeAlgorithm


@pytest.fixture
def algo(sg):
    """The DOMINO algorithm object, back in chain mode after the test."""
    a = sg.from_string("domino")
    yield a
    a.configure_tree(None)


@pytest.fixture
def tree_env(monkeypatch):
    def set_env(topk=None, budget=None):
        for name, val in (("DOMINO_TREE_TOPK", topk), ("DOMINO_TREE_BUDGET", budget)):
            if val is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(val))
    set_env()
    monkeypatch.delenv("SGLANG_SIMULATE_ACC_LEN", raising=False)
    return set_env


# tree mode v1 needs these two (the defaults: triton on a GPU-less box, xgrammar)
TREE_FLAGS = ("--attention-backend", "triton", "--grammar-backend", "none")


def _resolve(target, draft, *extra, algo="domino"):
    from sglang.srt.server_args import prepare_server_args

    argv = ["--model-path", target, "--speculative-algorithm", algo, "--device", "cuda",
            "--skip-tokenizer-init", "--speculative-draft-model-path", draft]
    return prepare_server_args(argv + list(extra))


# ---- resolution -----------------------------------------------------------------------------
@pytest.mark.parametrize("topk, budget, extra, b, n", [
    (4, 16, (), 8, 16),                                            # budget-limited
    (2, 64, (), 8, 15),                                            # full tree: 1 + 7*2
    (3, 8, (), 8, 8),                                              # N == B
    (4, 16, ("--speculative-dflash-block-size", "6"), 6, 16),      # smaller draft block
    (4, 16, ("--speculative-num-draft-tokens", "16"), 8, 16),      # N passed explicitly
    (8, 64, ("--attention-backend", "flashinfer"), 8, 57),         # the largest tree
])
def test_tree_resolution(algo, tiny_pair, tree_env, topk, budget, extra, b, n):
    from domino_sglang.core.tree import tree_num_nodes

    target, draft = tiny_pair
    tree_env(topk, budget)
    sa = _resolve(target, draft, *TREE_FLAGS, *extra)
    assert n == tree_num_nodes(b, topk, budget)
    assert sa.speculative_num_draft_tokens == n and sa.speculative_dflash_block_size == b
    assert sa.speculative_eagle_topk == 1 and sa.speculative_num_steps == 1
    assert sa.page_size == 1 and sa.grammar_backend == "none"
    # the draft runner keeps width B, the target verifies N (resolve_num_tokens_per_req)
    assert algo.tree_draft_width == b
    assert algo.get_num_tokens_per_req_for_target_verify(n, True) == b
    assert algo.get_num_tokens_per_req_for_target_verify(n, False) == n
    from sglang.srt.speculative.spec_utils import resolve_num_tokens_per_req

    for draft, width in ((True, b), (False, n)):
        assert resolve_num_tokens_per_req(phase="target_verify", server_args=sa,
                                          spec_algorithm=algo, is_draft_worker=draft) == width


def test_tree_options_from_the_draft_config(algo, tmp_path, tree_env):
    target, draft = write_pair(tmp_path, drafter_edit=lambda c: c["dflash_config"].update(
        tree_topk=2, tree_budget=10))
    sa = _resolve(target, draft, *TREE_FLAGS)
    assert (sa.speculative_dflash_block_size, sa.speculative_num_draft_tokens) == (8, 10)
    tree_env(3, 12)  # the environment wins over dflash_config
    sa = _resolve(target, draft, *TREE_FLAGS)
    assert (sa.speculative_dflash_block_size, sa.speculative_num_draft_tokens) == (8, 12)


def test_chain_resolution_unchanged_after_tree(algo, tiny_pair, tree_env):
    """A chain resolution after a tree one (same process) is DFLASH's again, draft width too."""
    target, draft = tiny_pair
    tree_env(4, 16)
    _resolve(target, draft, *TREE_FLAGS)
    assert algo.tree_draft_width == 8
    tree_env()
    a, b = _resolve(target, draft), _resolve(target, draft, algo="DFLASH")
    va, vb = vars(a), vars(b)
    assert sorted(k for k in va if va[k] != vb.get(k)) == [
        "model_config", "random_seed", "speculative_algorithm"]
    assert a.speculative_num_draft_tokens == 8 and a.speculative_dflash_block_size is None
    assert algo.tree_draft_width is None
    assert algo.get_num_tokens_per_req_for_target_verify(8, True) == 8


# ---- refusals (each names the flag / variable and its value) --------------------------------
@pytest.mark.parametrize("case, topk, budget, extra, match", [
    ("topk too large", 9, 16, (), r"DOMINO_TREE_TOPK=9.*\[2, 8\]"),
    ("budget too large", 4, 65, (), r"DOMINO_TREE_BUDGET=65.*at most 64"),
    ("budget too small", 4, 1, (), r"DOMINO_TREE_BUDGET=1.*>= 2"),
    ("budget below B", 4, 6, (), r"DOMINO_TREE_BUDGET=6.*below the draft block size B=8"),
    ("budget below smaller B", 4, 5, ("--speculative-dflash-block-size", "6"),
     r"DOMINO_TREE_BUDGET=5.*B=6"),
    ("topk without budget", 4, None, (), r"DOMINO_TREE_TOPK=4.*DOMINO_TREE_BUDGET"),
    ("budget without topk", None, 16, (), r"DOMINO_TREE_BUDGET=16 only applies to tree mode"),
    ("topk not an int", "x", 16, (), r"DOMINO_TREE_TOPK='x'.*integer"),
    ("fa3", 4, 16, ("--attention-backend", "fa3"), r"--attention-backend fa3.*triton"),
    ("prefill fa3", 4, 16, ("--prefill-attention-backend", "fa3"),
     r"--prefill-attention-backend fa3"),
    ("page size", 4, 16, ("--page-size", "16"), r"--page-size 16.*--page-size 1"),
    ("draft window", 4, 16, ("--speculative-draft-window-size", "64"),
     r"--speculative-draft-window-size 64"),
    ("num draft tokens != N", 4, 16, ("--speculative-num-draft-tokens", "8"),
     r"--speculative-num-draft-tokens 8: in tree mode .* = 16"),
    ("block too large", 4, 16, ("--speculative-dflash-block-size", "12"),
     r"--speculative-dflash-block-size 12.*\[2, 8\]"),
])
def test_tree_refusals(algo, tiny_pair, tree_env, case, topk, budget, extra, match):
    target, draft = tiny_pair
    tree_env(topk, budget)
    flags = TREE_FLAGS if "--attention-backend" not in extra else ("--grammar-backend", "none")
    with pytest.raises(ValueError, match=match):
        _resolve(target, draft, *flags, *extra)


def test_tree_refuses_grammar_backend(algo, tiny_pair, tree_env):
    target, draft = tiny_pair
    tree_env(4, 16)
    with pytest.raises(ValueError, match=r"--grammar-backend xgrammar.*--grammar-backend none"):
        _resolve(target, draft, "--attention-backend", "triton")  # SGLang's default grammar


def test_tree_refuses_simulated_acceptance(algo, tiny_pair, tree_env, monkeypatch):
    target, draft = tiny_pair
    tree_env(4, 16)
    monkeypatch.setenv("SGLANG_SIMULATE_ACC_LEN", "3")
    with pytest.raises(ValueError, match="SGLANG_SIMULATE_ACC_LEN=3"):
        _resolve(target, draft, *TREE_FLAGS)


def test_tree_refuses_mamba_targets(algo, tiny_pair, tree_env, monkeypatch):
    from sglang.srt.configs import hybrid_arch

    target, draft = tiny_pair
    tree_env(4, 16)
    monkeypatch.setattr(hybrid_arch, "mambaish_config", lambda mc: object())
    with pytest.raises(ValueError, match=r"--model-path .*Mamba / hybrid"):
        _resolve(target, draft, *TREE_FLAGS)
    tree_env()
    _resolve(target, draft)  # chain mode does not ask


@pytest.mark.parametrize("backend", ["trtllm_mha", "trtllm_mla", "fa3", "fa4", "flashmla",
                                     "torch_native", None])
def test_tree_attention_backends_refused(tiny_pair, backend):
    """Backends SGLang refuses on a CPU box before our check, tested on the check itself."""
    from domino_sglang.sglang_plugin.options import DominoServeOptions
    from domino_sglang.sglang_plugin.validate import DominoServerArgsError, check_tree_server_args

    target, _ = tiny_pair
    opts = DominoServeOptions(tree_topk=4, tree_budget=16)
    sa = SimpleNamespace(model_path=target, attention_backend=backend,
                         prefill_attention_backend=None, decode_attention_backend=None,
                         page_size=1, speculative_draft_window_size=None, grammar_backend="none")
    with pytest.raises(DominoServerArgsError, match=f"--attention-backend {backend}"):
        check_tree_server_args(sa, opts)
    for ok in ("triton", "flashinfer"):
        check_tree_server_args(SimpleNamespace(**{**vars(sa), "attention_backend": ok}), opts)
    if backend is not None:  # (an unset split flag falls back to --attention-backend)
        with pytest.raises(DominoServerArgsError, match=f"--decode-attention-backend {backend}"):
            check_tree_server_args(SimpleNamespace(**{**vars(sa), "attention_backend": "triton",
                                                      "decode_attention_backend": backend}), opts)


# ---- factory + hook (subprocess: the hook patches SGLang globals) -----------------------------
_FACTORY = """
import os, sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from sglang.srt.plugins import load_plugins
load_plugins()  # what every scheduler process runs first: register() + apply_hooks()
from sglang.srt.plugins.hook_registry import HookRegistry
from sglang.srt.server_args import prepare_server_args
from sglang.srt.speculative import dflash_utils
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
import domino_sglang.sglang_plugin as plugin

class TritonAttnBackend:  # name-matched stand-in: DFlash captures it without a mask
    pass

argv = ["--model-path", {target!r}, "--speculative-algorithm", "domino", "--device", "cuda",
        "--skip-tokenizer-init", "--speculative-draft-model-path", {draft!r},
        "--attention-backend", "triton", "--grammar-backend", "none"]
algo = SpeculativeAlgorithm.from_string("domino")
orig_box = [dflash_utils.resolve_dflash_verify_mask_policy]  # HookRegistry rebinds module globals

# 1) chain server: chain worker, no hook registered or applied, DFLASH's mask policy
sa = prepare_server_args(argv)
cls = algo.create_worker(sa)
from domino_sglang.sglang_plugin.worker import DominoWorkerV2
assert cls is DominoWorkerV2, cls
assert plugin.TREE_MASK_HOOK_TARGET not in HookRegistry._hooks
assert dflash_utils.resolve_dflash_verify_mask_policy is orig_box[0]
assert not hasattr(orig_box[0], "__wrapped__")
assert "domino_sglang.sglang_plugin.tree_worker" not in sys.modules
assert dflash_utils.resolve_dflash_verify_mask_policy(TritonAttnBackend()) == ("TritonAttnBackend", False)
assert algo.get_num_tokens_per_req_for_target_verify(8, True) == 8
print("CHAIN ok")

# 2) tree server (fresh resolution, as a tree launcher would hand the scheduler)
os.environ["DOMINO_TREE_TOPK"] = "4"; os.environ["DOMINO_TREE_BUDGET"] = "16"
sa = prepare_server_args(argv)
algo.configure_tree(None)  # the scheduler process starts without the launcher's state
cls = algo.create_worker(sa)
from domino_sglang.sglang_plugin import tree_worker
assert cls is tree_worker.DominoTreeWorkerV2, cls
assert tree_worker.TREE_MASK_ACTIVE is True
assert algo.get_num_tokens_per_req_for_target_verify(16, True) == 8
assert algo.get_num_tokens_per_req_for_target_verify(16, False) == 16
patched = dflash_utils.resolve_dflash_verify_mask_policy
assert patched is not orig_box[0] and patched.__wrapped__ is orig_box[0]
assert patched(TritonAttnBackend()) == ("TritonAttnBackend", True)
assert algo.create_worker(sa) is cls  # idempotent: one hook
assert sum(h is tree_worker.tree_mask_policy
           for _, h, _ in HookRegistry._hooks[plugin.TREE_MASK_HOOK_TARGET]) == 1
print("TREE ok")

# 3) arguments resolved without the tree options are refused by the factory
del os.environ["DOMINO_TREE_TOPK"], os.environ["DOMINO_TREE_BUDGET"]
chain_sa = prepare_server_args(argv)
os.environ["DOMINO_TREE_TOPK"] = "4"; os.environ["DOMINO_TREE_BUDGET"] = "16"
try:
    algo.create_worker(chain_sa)
except plugin.DominoPluginError as exc:
    assert "resolved without the tree options" in str(exc), exc
    print("MISMATCH ok")
"""


def test_factory_and_mask_hook_only_in_tree_mode(tmp_path):
    pytest.importorskip("sglang")
    target, draft = write_pair(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOMINO_TREE_TOPK", "DOMINO_TREE_BUDGET", "SGLANG_SIMULATE_ACC_LEN")}
    env["SGLANG_PLUGINS"] = "domino"
    code = _FACTORY.format(here=str(HERE), target=target, draft=draft)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180)
    lines = [x for x in out.stdout.splitlines() if x.endswith(" ok")]
    assert lines == ["CHAIN ok", "TREE ok", "MISMATCH ok"], (out.stdout[-2000:],
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
    assert "--speculative-num-draft-tokens" not in tree
    assert tree[tree.index("--speculative-dflash-block-size") + 1] == "8"
    assert tree[tree.index("--grammar-backend") + 1] == "none"
    assert tree[tree.index("--page-size") + 1] == "1"
    assert tree[tree.index("--attention-backend") + 1] == "triton"
    with pytest.raises(SystemExit):
        serve.main(base + ["--tree-topk", "4"])  # a budget is required
    with pytest.raises(SystemExit):
        serve.main(base + ["--tree-topk", "4", "--tree-budget", "16",
                           "--attention-backend", "fa3"])


def test_mixed_sources_pass_the_env_only_worker_check(tiny_pair, monkeypatch):
    """DominoWorkerV2.__init__ resolves the options from the environment only: half a pair
    there (the other half in dflash_config) must not refuse the tree worker's construction."""
    from domino_sglang.config import ConfigError, DrafterConfig
    from domino_sglang.sglang_plugin.options import DominoServeOptions

    env = {"DOMINO_TREE_BUDGET": "16"}
    DominoServeOptions.resolve(env=env).check_supported()  # env only: not judged
    _, draft = tiny_pair
    drafter = DrafterConfig.from_file(draft)
    with pytest.raises(ConfigError, match="only applies to tree mode"):
        DominoServeOptions.resolve(drafter, env=env).check_supported()
    drafter.dflash_config.model_extra["tree_topk"] = 4  # the other half in dflash_config
    opts = DominoServeOptions.resolve(drafter, env=env)
    opts.check_supported()
    assert (opts.tree_topk, opts.tree_budget, opts.topk_source) == (4, 16, "dflash_config.tree_topk")
    assert opts.tree_nodes(8) == 16
