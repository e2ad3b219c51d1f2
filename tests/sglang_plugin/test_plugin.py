"""The SGLang 0.5.17 plugin on CPU: entry point, registration (in subprocesses), the DFLASH
drift test, server-argument resolution for good and bad tiny configs, the worker factory,
runtime helpers, and the draft model's head-weight loading."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _pair import write_pair

HERE = Path(__file__).parent


def test_entry_point_is_discoverable():
    eps = importlib.metadata.entry_points(group="sglang.srt.plugins")
    ours = [ep for ep in eps if ep.name == "domino"]
    assert ours and ours[0].value == "domino_sglang.sglang_plugin:register"
    assert callable(ours[0].load())


_SUB = """
import sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from sglang.srt.plugins import load_plugins
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
load_plugins()
try:
    algo = SpeculativeAlgorithm.from_string("domino")
except ValueError as exc:
    print("RESULT unknown", exc); raise SystemExit(0)
from domino_sglang.sglang_plugin import register
assert register() and register()  # idempotent
assert SpeculativeAlgorithm.from_string("DOMINO") is algo
print("RESULT", type(algo).__name__, algo.name, algo.supports_overlap)
"""


@pytest.mark.sglang
@pytest.mark.parametrize("allow", ["", "domino", "other"])
def test_load_plugins_registers_domino(allow):
    env = dict(os.environ, SGLANG_PLUGINS=allow)
    out = subprocess.run([sys.executable, "-c", _SUB.format(here=str(HERE))], env=env,
                         capture_output=True, text=True, timeout=120)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    assert line, out.stderr[-3000:]
    if allow == "other":
        assert line[0].startswith("RESULT unknown")
    else:
        assert line[0] == "RESULT DominoSpecAlgo DOMINO True"


# ---- in-process (sglang imported once) ------------------------------------------------------
@pytest.fixture(scope="module")
def sg():
    from domino_sglang.sglang_plugin import register
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    assert register()
    return SpeculativeAlgorithm


def test_unsupported_version_is_refused(monkeypatch):
    from domino_sglang import sglang_plugin

    with pytest.raises(sglang_plugin.DominoPluginError, match="0.5.99 is not supported"):
        sglang_plugin.check_sglang_version("0.5.99")
    monkeypatch.setattr(sglang_plugin, "_installed_sglang_version", lambda: "0.6.0")
    with pytest.raises(sglang_plugin.DominoPluginError, match="sglang==0.5.17"):
        sglang_plugin.register()
    monkeypatch.setenv("DOMINO_SGLANG_ANY_VERSION", "1")
    assert sglang_plugin.check_sglang_version("0.6.0") == "0.6.0"


@pytest.mark.sglang
def test_drift_against_dflash(sg):
    """Every public enum callable exists on DOMINO; every predicate answers like DFLASH."""
    import inspect

    domino, dflash = sg.from_string("domino"), sg.DFLASH
    names = [n for n, v in vars(sg).items()
             if not n.startswith("_") and n not in ("from_string", "register")
             and (inspect.isfunction(v) or isinstance(v, (classmethod, staticmethod)))]
    assert "create_future_map" in names and "need_topk" in names
    missing = [n for n in names if not callable(getattr(domino, n, None))]
    assert not missing, missing
    preds = [n for n in names if n.startswith(("is_", "supports_", "has_", "carries_", "need_"))]
    assert len(preds) >= 15
    diff = {n: (getattr(domino, n)(), getattr(dflash, n)()) for n in preds
            if getattr(domino, n)() != getattr(dflash, n)()}
    assert not diff, diff
    assert domino.get_num_tokens_per_req_for_target_verify(8, True) == \
        dflash.get_num_tokens_per_req_for_target_verify(8, True) == 8


def _resolve(target, draft, *extra, algo="domino"):
    from sglang.srt.server_args import prepare_server_args

    argv = ["--model-path", target, "--speculative-algorithm", algo, "--device", "cuda",
            "--skip-tokenizer-init"]
    if draft is not None:
        argv += ["--speculative-draft-model-path", draft]
    return prepare_server_args(argv + list(extra))


@pytest.mark.sglang
def test_resolution_matches_dflash(sg, tiny_pair):
    target, draft = tiny_pair
    a, b = _resolve(target, draft), _resolve(target, draft, algo="DFLASH")
    va, vb = vars(a), vars(b)
    diff = sorted(k for k in va if va[k] != vb.get(k))
    # + the Domino serve configuration (docs/serve_config.md), an extra instance attribute, and
    # the start-up warm-up (sglang_plugin/warmup.py)
    assert diff == ["_domino_serve_config", "model_config", "random_seed",
                    "speculative_algorithm", "warmups"], diff
    assert a.warmups == "domino" and b.warmups is None
    assert a.speculative_algorithm == "DOMINO"
    assert a.speculative_num_draft_tokens == 8 and a.speculative_eagle_topk == 1
    assert not a.disable_overlap_schedule
    c = _resolve(target, draft, "--speculative-num-draft-tokens", "4")
    assert c.speculative_num_draft_tokens == 4


@pytest.mark.sglang
def test_create_worker_and_runtime_helpers(sg, tiny_pair):
    import torch
    from sglang.srt.runtime_context import get_context
    from sglang.srt.speculative.dflash_worker_v2 import DFlashWorkerV2
    from sglang.srt.speculative.spec_info import create_dummy_verify_input

    target, draft = tiny_pair
    sa = _resolve(target, draft)
    algo = sg.from_string("domino")
    worker_cls = algo.create_worker(sa)
    assert issubclass(worker_cls, DFlashWorkerV2) and worker_cls.__name__ == "DominoWorkerV2"
    for w in (True, False):
        d1 = create_dummy_verify_input(algo, sa, None, 8, w)
        d2 = create_dummy_verify_input(sg.DFLASH, sa, None, 8, w)
        assert type(d1) is type(d2) and d1.capture_hidden_mode == d2.capture_hidden_mode
    get_context().set_server_args(sa)
    # the target captures the drafter's layers for DOMINO exactly as for DFLASH (0.5.17 takes
    # keyword arguments; the old `fn(algo, model_config)` stand-in never ran)
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_executor.model_runner_components.spec_aux_hidden_state import \
        resolve_spec_aux_hidden_state_config

    model_config = ModelConfig.from_server_args(sa)
    layer_ids = json.loads((Path(draft) / "config.json").read_text())["dflash_config"][
        "target_layer_ids"]
    for is_draft in (False, True):
        ours, theirs = (resolve_spec_aux_hidden_state_config(
            server_args=sa, model_config=model_config, spec_algorithm=a,
            is_draft_worker=is_draft) for a in (algo, sg.DFLASH))
        assert ours == theirs, (is_draft, ours, theirs)
        assert ours.dflash_use_aux_hidden_state is (not is_draft)
        assert ours.dflash_target_layer_ids == (None if is_draft else layer_ids)

    class _Pool:
        req_to_token = torch.zeros(4, 64, dtype=torch.int32)
        size = 4

    fm = algo.create_future_map(torch.device("cpu"), _Pool())
    assert type(fm).__name__ == "FutureMap"


@pytest.mark.sglang
@pytest.mark.parametrize("case, extra, edit, target_kw, match", [
    ("no draft path", (), None, None, "speculative-draft-model-path"),
    ("block too large", ("--speculative-num-draft-tokens", "16"), None, None,
     "trained with block_size=8"),
    ("block flags differ", ("--speculative-num-draft-tokens", "4",
                            "--speculative-dflash-block-size", "6"), None, None, "must match"),
    ("vocab mismatch", (), None, {"vocab_size": 256}, "vocab_size"),
    ("hidden mismatch", (), None, {"hidden_size": 128, "head_dim": 32}, "hidden_size"),
    ("layer ids", (), lambda c: c["dflash_config"].update(target_layer_ids=[1, 7]), None,
     "target_layer_ids"),
    ("target layers", (), None, {"num_layers": 3}, "num_target_layers"),
    ("draft dtype", (), lambda c: c.update(torch_dtype="float8_e4m3fn", dtype="float8_e4m3fn"), None, "dtype"),
    ("rejection sampling", ("--speculative-use-rejection-sampling",), None, None,
     "EAGLE-only"),
    ("eagle topk", ("--speculative-eagle-topk", "4"), None, None, "DOMINO_TREE_TOPK"),
    ("lossy threshold", ("--speculative-accept-threshold-single", "0.5"), None, None,
     "lossless"),
    ("bad projector", (), lambda c: c["dflash_config"].update(projector_type="eagle"), None,
     "projector_type"),
    ("tree mode without budget", (), lambda c: c["dflash_config"].update(tree_topk=4), None,
     r"dflash_config.tree_topk=4 .*needs a node budget"),
    ("cpu device", ("--device", "cpu"), None, None, "CUDA"),
])
def test_bad_server_args(sg, tmp_path, case, extra, edit, target_kw, match):
    target, draft = write_pair(tmp_path, drafter_edit=edit, target_kw=target_kw)
    if case == "no draft path":
        draft = None
    with pytest.raises(Exception, match=match):
        _resolve(target, draft, *extra)


@pytest.mark.sglang
def test_tree_env_option(sg, tiny_pair, monkeypatch):
    target, draft = tiny_pair
    monkeypatch.setenv("DOMINO_TREE_TOPK", "2")
    with pytest.raises(ValueError, match="DOMINO_TREE_TOPK"):
        _resolve(target, draft)
    monkeypatch.setenv("DOMINO_TREE_TOPK", "x")
    with pytest.raises(ValueError, match="expected an integer"):
        _resolve(target, draft)
    monkeypatch.setenv("DOMINO_TREE_TOPK", "1")
    assert _resolve(target, draft).speculative_algorithm == "DOMINO"


# ---- the draft model ------------------------------------------------------------------------
def _build_draft_model(sg, target, draft):
    import sglang.srt.layers.rotary_embedding.base as rope_base
    from sglang.srt.runtime_context import get_context, get_parallel
    from sglang.srt.utils.hf_transformers_utils import get_config

    from domino_sglang.sglang_plugin.draft_model import DominoDraftModel

    get_context().set_server_args(_resolve(target, draft))
    rope_base._is_cpu = True
    with get_parallel().override(tp_size=1, tp_rank=0, attn_tp_size=1, attn_tp_rank=0):
        return DominoDraftModel(get_config(draft, trust_remote_code=False))


def _weights(draft):
    from safetensors.torch import load_file

    return load_file(str(Path(draft) / "model.safetensors"))


@pytest.mark.sglang
def test_draft_model_loads_head_weights(sg, tiny_pair):
    import torch

    target, draft = tiny_pair
    model = _build_draft_model(sg, target, draft)
    sd = _weights(draft)
    model.load_weights(iter(sd.items()))
    assert model.has_domino_head and model.domino_shift_label
    hw = model.domino_head_weights()
    assert torch.equal(hw.w_ih, sd["prefix_gru.weight_ih_l0"])
    assert torch.equal(hw.w_hh, sd["prefix_gru.weight_hh_l0"])
    assert torch.equal(hw.w1, sd["embed_proj.0.weight"])
    assert torch.equal(hw.w2, sd["embed_proj.2.weight"])
    assert torch.equal(model.fc.weight, sd["fc.weight"])


@pytest.mark.sglang
def test_draft_model_missing_head_weight_raises(sg, tmp_path):
    target, draft = write_pair(tmp_path, drop_weights=("embed_proj.2.weight",))
    model = _build_draft_model(sg, target, draft)
    with pytest.raises(ValueError, match=r"embed_proj\.2\.weight.*missing"):
        model.load_weights(iter(_weights(draft).items()))


@pytest.mark.sglang
def test_draft_model_wrong_head_shape_raises(sg, tmp_path, tiny_pair):
    target, draft = tiny_pair
    model = _build_draft_model(sg, target, draft)
    sd = _weights(draft)
    sd["embed_proj.0.weight"] = sd["embed_proj.0.weight"][:, :-1]
    with pytest.raises(ValueError, match="shape"):
        model.load_weights(iter(sd.items()))


@pytest.mark.sglang
@pytest.mark.parametrize("name", ["embed_proj.2.weight", "layers.0.mlp.up_proj.weight"])
def test_draft_model_non_finite_weight_raises(sg, tmp_path, tiny_pair, name):
    target, draft = tiny_pair
    model = _build_draft_model(sg, target, draft)
    sd = _weights(draft)
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*NaN or Inf"):
        model.load_weights(iter(sd.items()))


@pytest.mark.sglang
def test_plain_dflash_checkpoint_runs_head_off(sg, tmp_path):
    target, draft = write_pair(tmp_path, domino=False)
    model = _build_draft_model(sg, target, draft)
    model.load_weights(iter(_weights(draft).items()))
    assert not model.has_domino_head and model.domino_head_weights() is None
    assert not model.domino_shift_label


@pytest.mark.sglang
def test_draft_forward_casts_block_embeddings_to_the_draft_dtype(sg, monkeypatch):
    """SGLang 0.5.17's eager extend path passes input_embeds.bfloat16() whatever the serving
    dtype (crashed an fp16 server on the H200); DominoDraftModel.forward casts them back."""
    import torch
    from sglang.srt.models.dflash import DFlashDraftModel

    from domino_sglang.sglang_plugin.draft_model import DominoDraftModel

    seen = []
    monkeypatch.setattr(DFlashDraftModel, "forward",
                        lambda self, ids, pos, fb, emb=None, *a, **k: seen.append(emb) or emb)
    m = DominoDraftModel.__new__(DominoDraftModel)
    torch.nn.Module.__init__(m)
    m.fc = torch.nn.Linear(4, 2, bias=False).to(torch.float16)
    out = m.forward(None, None, None, torch.ones(3, 2, dtype=torch.bfloat16))
    assert out.dtype == torch.float16 and seen[-1].dtype == torch.float16
    same = torch.ones(3, 2, dtype=torch.float16)
    assert m.forward(None, None, None, same) is same  # the graph path: no copy
    assert m.forward(None, None, None, None) is None
