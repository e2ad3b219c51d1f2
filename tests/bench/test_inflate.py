"""The inflated pair (``domino_sglang.bench.inflate``) computes what the tiny pair computes.

The trained pair of ``assets/domino-tiny`` is inflated to the ``mid`` shape (hidden 1024,
8 layers, 8 q / 2 kv heads of 128, vocab 8192; a 2-layer drafter reading 4 target layers, GRU
256, rank 128) in fp32 and compared with the tiny pair on held-out prompts: target logits,
the drafters' block drafts (base logits, Domino head tokens and logits), whole speculative
generations (tokens and per-round accept lengths), and padded tokens never chosen.
"""

import json
from pathlib import Path

import pytest
import torch

from domino_sglang.bench import inflate as inf
from domino_sglang.config import DrafterConfig
from domino_sglang.core.drafter import DominoDrafter
from domino_sglang.core.rollout import domino_rollout_ref
from domino_sglang.core.sampling import SamplingParams
from domino_sglang.hf.generate import domino_generate, layer_features

transformers = pytest.importorskip("transformers")

SRC = Path(__file__).resolve().parents[2] / "assets" / "domino-tiny"
V0 = 4096  # tiny vocabulary; ids >= V0 are padding in the inflated model
# fp32: the inflated model sums over wider rows in another order; INFLATION.md measured 2.4e-5
TOL = 1e-4
DRAFTERS = ("drafter-domino", "drafter-dflash")

pytestmark = pytest.mark.skipif(not (SRC / "target" / "config.json").exists(),
                                reason="assets/domino-tiny is not present")


def _prompts(n: int, max_len: int = 48) -> list[torch.Tensor]:
    rows = [json.loads(line) for line in (SRC / "heldout_prompts.jsonl").open()]
    # every 37th prompt: different openings, not only the shared chat-template prefix
    return [torch.tensor([r["input_ids"][:max_len]]) for r in rows[::37][:n]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these small GEMMs gain nothing from more, and on a loaded machine
    spinning OpenMP workers made the module several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, _one_thread):
    out = tmp_path_factory.mktemp("inflated")
    res = inf.inflate_pair(SRC, out, "mid", dtype="float32", device="cpu", drafters=DRAFTERS)
    load = transformers.AutoModelForCausalLM.from_pretrained
    tiny = {"target": load(SRC / "target", dtype=torch.float32).eval()}
    big = {"target": load(out / "target", dtype=torch.float32).eval()}
    for name in DRAFTERS:
        tiny[name] = DominoDrafter.from_pretrained(SRC / name, dtype=torch.float32)
        big[name] = DominoDrafter.from_pretrained(out / name, dtype=torch.float32)
    return tiny, big, res


def test_outputs_and_record(pairs):
    _, big, res = pairs
    rec = json.loads((res.out / "inflate.json").read_text())
    assert rec["preset"] == "mid" and rec["shape"]["target"]["hidden_size"] == 1024
    assert rec["layer_map"] == res.placement.layer_map
    cfg = big["target"].config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (1024, 8, 8192)
    assert cfg.tie_word_embeddings is False
    head, embed = big["target"].lm_head.weight, big["target"].model.embed_tokens.weight
    assert head.data_ptr() != embed.data_ptr() and not torch.equal(head, embed)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "generation_config.json"):
        assert (res.out / "target" / f).read_bytes() == (SRC / "target" / f).read_bytes()
    dc = big["drafter-domino"].config
    assert (dc.hidden_size, dc.num_hidden_layers, dc.gru_hidden_dim, dc.rank) == (1024, 2, 256, 128)
    assert dc.target_layer_ids == res.placement.target_layer_ids
    assert len(dc.target_layer_ids) == 4 and dc.num_target_layers == 8
    assert not big["drafter-dflash"].has_head and big["drafter-domino"].has_head
    for name in DRAFTERS:  # the plugin's start-up check (hidden, vocab, layer ids, dtype)
        big[name].config.check_against_target(cfg)
    # extra layers are zero: only the placed tiny layers carry weights
    placed = set(res.placement.layer_map)
    for i, layer in enumerate(big["target"].model.layers):
        nonzero = layer.self_attn.q_proj.weight.abs().sum() > 0
        assert bool(nonzero) == (i in placed), f"layer {i}"


def test_target_logits_match(pairs):
    tiny, big, _ = pairs
    worst = 0.0
    with torch.inference_mode():
        for ids in _prompts(4):
            a = tiny["target"](ids).logits
            b = big["target"](ids).logits
            diff = (a - b[..., :V0]).abs().max().item()
            worst = max(worst, diff)
            assert diff < TOL, f"max |logit diff| {diff:.3g} over the real vocabulary"
            assert torch.equal(a.argmax(-1), b.argmax(-1))
            # padded vocabulary: hugely negative, far below every real logit
            assert b[..., V0:].max() < -1e4, b[..., V0:].max()
            assert (b[..., :V0].min(-1).values > b[..., V0:].max(-1).values + 1e4).all()


def _draft_hidden(model_pair, drafter_name, ids):
    """Prefill ``ids`` and run the drafter on [bonus, MASK x (K-1)]: (hidden [1, K, D], bonus)."""
    target, drafter = model_pair["target"], model_pair[drafter_name]
    cfg = drafter.config
    k = cfg.resolved_block_size
    out = target(ids, output_hidden_states=True)
    n = ids.shape[1]
    ctx = drafter.extend_context(None, layer_features(out.hidden_states, cfg.target_layer_ids),
                                 torch.arange(n)[None])
    block = torch.full((1, k), cfg.mask_token_id, dtype=torch.long)
    block[0, 0] = out.logits[0, -1].argmax()
    embed = target.get_input_embeddings().weight
    return drafter(embed[block], torch.arange(n, n + k)[None], ctx), block[:, 0]


def _rollout(model_pair, drafter_name, hidden, bonus, sampling=None, uniforms=None):
    target, drafter = model_pair["target"], model_pair[drafter_name]
    cfg = drafter.config
    return domino_rollout_ref(hidden, bonus, target.get_output_embeddings().weight,
                              target.get_input_embeddings().weight, drafter.head_weights(),
                              shift_label=cfg.shift_label,
                              pure_prefix_len=cfg.pure_draft_prefix_len,
                              sampling=sampling, uniforms=uniforms)


@pytest.mark.parametrize("name", DRAFTERS)
def test_drafter_block_matches(pairs, name):
    tiny, big, _ = pairs
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams.make(1, 1.0, 0, 1.0)  # T = 1
    with torch.inference_mode():
        for ids in _prompts(2):
            h_t, bonus_t = _draft_hidden(tiny, name, ids)
            h_b, bonus_b = _draft_hidden(big, name, ids)
            assert torch.equal(bonus_t, bonus_b)
            k = h_t.shape[1]
            base_t = h_t[0, :k - 1] @ tiny["target"].get_output_embeddings().weight.t()
            base_b = h_b[0, :k - 1] @ big["target"].get_output_embeddings().weight.t()
            diff = (base_t - base_b[:, :V0]).abs().max().item()
            assert diff < TOL, f"{name}: base logits differ by {diff:.3g}"
            assert base_b[:, V0:].max() < -1e4
            roll_t, roll_b = (_rollout(tiny, name, h_t, bonus_t), _rollout(big, name, h_b, bonus_b))
            assert torch.equal(roll_t.tokens, roll_b.tokens)
            diff = (roll_t.logits - roll_b.logits[..., :V0]).abs().max().item()
            assert diff < TOL, f"{name}: rollout logits differ by {diff:.3g}"
            assert roll_b.logits[..., V0:].max() < -1e4
            # sampled drafts with the same uniforms: same tokens, same q over the real ids
            u = torch.rand(1, k - 1, generator=gen)
            st = _rollout(tiny, name, h_t, bonus_t, params, u)
            sb = _rollout(big, name, h_b, bonus_b, params, u)
            assert torch.equal(st.tokens, sb.tokens) and (sb.tokens < V0).all()
            assert (st.draft_probs - sb.draft_probs[..., :V0]).abs().max() < 1e-5
            assert sb.draft_probs[..., V0:].max() == 0


@pytest.mark.parametrize("name", DRAFTERS)
def test_generate_same_tokens_and_accept_lens(pairs, name):
    tiny, big, _ = pairs
    rounds = 0
    for ids in _prompts(2, max_len=40):
        a = domino_generate(tiny["target"], tiny[name], ids, max_new_tokens=24,
                            stop_token_ids=[2])
        b = domino_generate(big["target"], big[name], ids, max_new_tokens=24, stop_token_ids=[2])
        assert a.tokens == b.tokens
        assert a.accept_lens == b.accept_lens
        rounds += sum(x > 1 for x in a.accept_lens)
    assert rounds > 0  # drafts were accepted, so the drafter path was really exercised


def test_padded_tokens_never_sampled(pairs):
    _, big, _ = pairs
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        logits = torch.cat([big["target"](ids).logits[0] for ids in _prompts(2)])
    probs = torch.softmax(logits.float(), dim=-1)  # T = 1
    assert probs[:, V0:].sum(-1).max() < 1e-30
    draws = torch.multinomial(probs, 2000, replacement=True, generator=gen)
    assert (draws < V0).all()
    assert draws.unique().numel() > 50  # real sampling, not a degenerate argmax
    assert (logits.argmax(-1) < V0).all()


def test_qwen3_8b_plan_loads():
    """The qwen3-8b preset's tensors have the names and shapes that HF Qwen3 and the drafter
    loader expect (checked on the meta device, nothing built)."""
    shape = inf.resolve_shape("qwen3-8b")
    tiny_t = json.loads((SRC / "target" / "config.json").read_text())
    tiny_d = json.loads((SRC / "drafter-domino" / "config.json").read_text())
    inf.check_shape(tiny_t, tiny_d, shape)
    pl = inf.place_layers(4, 36, [0, 1, 2], inf.spread_layer_ids(36, 5))
    assert pl.target_layer_ids == [1, 9, 17, 25, 33]
    for t, k in zip([0, 1, 2], pl.fc_blocks):  # tiny id t read after tiny layer t
        big_id = pl.target_layer_ids[k]
        assert pl.layer_map[t] <= big_id < pl.layer_map[t + 1]
    dims = inf._dims(tiny_t, shape.target, "cpu")
    pad = inf.PAD_CONSTANTS[torch.bfloat16]
    plans = inf.target_plans(tiny_t, None, shape.target, pl, dims, pad)
    tcfg = inf.target_config(tiny_t, shape.target, "bfloat16")
    cfg = transformers.Qwen3Config(**tcfg)
    with torch.device("meta"):
        ref = transformers.Qwen3ForCausalLM(cfg).state_dict()
    assert {p.name: p.shape for p in plans} == {k: tuple(v.shape) for k, v in ref.items()}
    dcfg = inf.drafter_config(tiny_d, shape, pl, "bfloat16", True, tiny_t["hidden_size"])
    assert dcfg["dflash_config"]["target_layer_ids"] == [1, 9, 17, 25, 33]
    dfl = dcfg["dflash_config"]
    assert (dfl["gru_hidden_dim"], dfl["emb_dim"], dfl["projector_type"]) == (1024, 256, "domino")
    assert dcfg["num_target_layers"] == 36 and dfl["block_size"] == 16
    DrafterConfig.from_dict(dcfg).check_against_target(tcfg)
    with torch.device("meta"):
        dref = DominoDrafter(DrafterConfig.from_dict(dcfg)).state_dict()
    dplans = inf.drafter_plans(tiny_d, None, True, shape, pl, dims, pad)
    assert {p.name: p.shape for p in dplans} == {k: tuple(v.shape) for k, v in dref.items()}


@pytest.mark.parametrize("argv,needle", [
    (["--src", "/nonexistent/tiny", "--shape", "mid"], "--src"),
    (["--shape", "huge"], "--shape 'huge'"),
    (["--shape", "mid", "--hidden-size", "200"], "target.hidden_size=200"),
    (["--shape", "mid", "--head-dim", "96"], "target.head_dim=96"),
    (["--shape", "mid", "--draft-gru-hidden-dim", "64"], "drafter.gru_hidden_dim=64"),
    (["--shape", "mid", "--drafters", "eagle"], "--drafters"),
])
def test_cli_errors_name_the_argument(tmp_path, capsys, argv, needle):
    assert inf.main(argv + ["--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "o" / "target").exists()
