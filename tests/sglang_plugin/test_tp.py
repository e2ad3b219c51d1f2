"""Tensor-parallel Domino (``--tp-size 2``) on CPU: the worker's TP proposal seam on 2 gloo ranks,
the W2 shard of the draft model, and the server-argument checks.

The seam test spawns 2 ranks that each set up SGLang's own distributed state
(``init_distributed_environment`` + ``initialize_model_parallel`` on gloo), so the head gathers
through the real TP ``GroupCoordinator`` that ``get_tp_group()`` gives the worker. The target's
LM head and input embedding are real ``ParallelLMHead`` / ``VocabParallelEmbedding`` shards
(V = 37, padded to 64: rank 1 holds 5 real rows and 27 padding rows, filled with 1e30), loaded
by their own ``weight_loader``; the draft model is a ``DominoDraftModel`` holding only the head.
Each rank builds the sampler through ``DominoWorkerV2._domino_build_sampler`` and runs both the
graph seam (``sampler(hidden_states, input_ids)``) and the eager seam
(``_greedy_sample_from_vocab_parallel_head``), counting every ``torch.distributed`` collective.
The parent compares with the single-shard reference ``domino_rollout_ref`` (fp32, exact
arithmetic as in tests/core/test_sharded.py: dyadic hidden / lm_head / embedding, one non-zero
per W2 row) and, in bf16, with the TP=1 plugin head ``torch_domino_head`` on the full weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from _sharded_helpers import (assert_same_tokens, count_collectives,  # noqa: E402
                              planted_tie_problem)
WORLD = 2
B, K, D, G, R, V = 5, 6, 16, 8, 4, 37
TIED = ((3, 33), (31, 32), (12, 13))  # equal rows: the lowest id must win (across the edge too)
PAD = 1e30  # written into the padding rows of every shard; a padded id winning is a bug
CASES = {  # name -> (dtype, use_head, shift_label, pure_prefix_len, tied embeddings)
    "head-shift-p1": (torch.float32, True, True, 1, False),
    "head-noshift-p0": (torch.float32, True, False, 0, False),
    "head-shift-p1-tied": (torch.float32, True, True, 1, True),
    "head-allprefix": (torch.float32, True, True, K - 1, False),
    "nohead-shift": (torch.float32, False, True, 0, False),
    "nohead-noshift": (torch.float32, False, False, 0, True),
    "bf16-head-shift-p1": (torch.bfloat16, True, True, 1, False),
    "bf16-head-noshift-p0": (torch.bfloat16, True, False, 0, True),
}


def _problem(tied: bool):
    """Seeded: hidden [B, K, D], bonus [B], lm_head / embed [V, D], head weights (W2 [V, R])."""
    gen = torch.Generator().manual_seed(4321)
    hidden, lm_head, embed, w2 = planted_tie_problem(gen, B, K, D, V, R, TIED)
    if tied:
        embed = lm_head
    w_ih = torch.randn(3 * G, D, generator=gen) * 0.5
    w_hh = torch.randn(3 * G, G, generator=gen) * 0.5
    w1 = torch.randn(R, D + G, generator=gen)
    bonus = torch.tensor([0, 36, 31, 32, 33])  # first, last, both sides of the shard edge
    return hidden, bonus, lm_head, embed, (w_ih, w_hh, w1, w2)


# ---- the ranks ------------------------------------------------------------------------------
def _draft_model(dtype, use_head, shift_label, prefix, head):
    """A ``DominoDraftModel`` holding only what the worker's seam reads (no backbone)."""
    from domino_sglang.sglang_plugin.draft_model import (DominoDraftModel, _GRUWeights,
                                                         _Linear)

    m = DominoDraftModel.__new__(DominoDraftModel)
    torch.nn.Module.__init__(m)
    m.config = types.SimpleNamespace(vocab_size=V)
    m.domino_shift_label, m.domino_pure_prefix_len = shift_label, prefix
    m.domino_head_enabled = use_head
    if use_head:
        m.prefix_gru = _GRUWeights(D, G)
        m.embed_proj = torch.nn.ModuleDict({"0": _Linear(D + G, R), "2": _Linear(R, V)})
        for p, w in zip((m.prefix_gru.weight_ih_l0, m.prefix_gru.weight_hh_l0,
                         m.embed_proj["0"].weight, m.embed_proj["2"].weight), head):
            p.data = w.to(dtype)
    return m


def _target(rank, dtype, lm_full, embed_full, tied):
    """Real ParallelLMHead / VocabParallelEmbedding shards of this rank, padding rows = PAD."""
    from sglang.srt.layers.vocab_parallel_embedding import (ParallelLMHead,
                                                            VocabParallelEmbedding)
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(tp_size=WORLD, tp_rank=rank, attn_tp_size=WORLD,
                                 attn_tp_rank=rank):
        embed = VocabParallelEmbedding(V, D, params_dtype=dtype)
        lm = embed if tied else ParallelLMHead(V, D, params_dtype=dtype)
    for mod, full in ((embed, embed_full), (lm, lm_full)):
        mod.weight_loader(mod.weight, full.to(dtype))
        mod.weight.data[mod.shard_indices.num_org_elements:] = PAD
    return types.SimpleNamespace(lm_head=lm, get_input_embeddings=lambda: embed)


def _worker(target, draft):
    from domino_sglang.sglang_plugin.serve_config import DominoServeConfig
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    w = DominoWorkerV2.__new__(DominoWorkerV2)
    w.__dict__.update(_target_worker=types.SimpleNamespace(
        model_runner=types.SimpleNamespace(model=target)), draft_model=draft, block_size=K,
        ps=types.SimpleNamespace(tp_rank=0), _domino_last_hidden=None,
        _domino_eager_sampler=None, _domino_eager_batches=set(),
        server_args=types.SimpleNamespace(tp_size=2),
        domino_config=DominoServeConfig(block_size=K, num_verify_tokens=K,
                                        drafter_block_size=K, tp_size=2))
    return w


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(HERE))
    import _tv_mock

    _tv_mock.install()
    torch.set_num_threads(1)
    from sglang.srt.distributed import parallel_state as ps

    ps.init_distributed_environment(world_size=WORLD, rank=rank, local_rank=rank,
                                    distributed_init_method=f"file://{init_file}",
                                    backend="gloo", timeout=120)
    ps.initialize_model_parallel(tensor_model_parallel_size=WORLD, backend="gloo")
    group = ps.get_tp_group()
    # SGLang's all_gather_into_tensor is a custom op with CUDA kernels only; on CPU call its
    # body (the same coordinator path, torch.distributed on the gloo device group)
    group.all_gather_into_tensor = group._all_gather_into_tensor
    calls: list[str] = []
    count_collectives(calls)
    results = {"group": (type(group).__name__, group.world_size, group.rank_in_group)}
    for name, (dtype, use_head, shift, prefix, tied) in CASES.items():
        hidden, bonus, lm_full, embed_full, head = _problem(tied)
        target = _target(rank, dtype, lm_full, embed_full, tied)
        w = _worker(target, _draft_model(dtype, use_head, shift, prefix, head))
        h = hidden.to(dtype)
        ids = torch.full((B, K), 7, dtype=torch.long)
        ids[:, 0] = bonus
        del calls[:]
        sampler = w._domino_build_sampler(max_bs=8)
        built = list(calls)
        del calls[:]
        sampler(h.reshape(B * K, D), ids.reshape(-1))
        graph = sampler.out[: B * (K - 1)].view(B, K - 1).clone()
        graph_calls = list(calls)
        del calls[:]
        w._domino_last_hidden = h.reshape(B * K, D)
        w._draft_block_ids_buf = ids
        eager = w._greedy_sample_from_vocab_parallel_head(
            hidden_states=h[:, 1:].reshape(-1, D), lm_head=target.lm_head).view(B, K - 1)
        head_w = sampler.head
        results[name] = dict(graph=graph, eager=eager.clone(), graph_calls=graph_calls,
                             eager_calls=list(calls), build_calls=built,
                             impl=sampler.impl_name, lm_rows=int(sampler.lm_head.shape[0]),
                             w2=None if head_w is None else head_w.w2.clone(),
                             shard=getattr(w.draft_model, "domino_w2_vocab_shard", None))
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    ps.destroy_model_parallel()
    ps.destroy_distributed_environment()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("tp_seam")
    mp.spawn(_rank, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _one_thread(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MKL rounds the GRU/W1 GEMMs by thread count (test_sharded)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _reference(name):
    """fp32: the spec's ``domino_rollout_ref``; bf16: the TP=1 plugin head on full weights."""
    from domino_sglang.core.drafter import HeadWeights
    from domino_sglang.sglang_plugin.head import torch_domino_head
    from domino_sglang.core import domino_rollout_ref

    dtype, use_head, shift, prefix, tied = CASES[name]
    hidden, bonus, lm, embed, head = _problem(tied)
    if dtype == torch.float32:
        hw = HeadWeights(*head) if use_head else None
        return _one_thread(lambda: domino_rollout_ref(
            hidden, bonus, lm, embed, hw, shift_label=shift, pure_prefix_len=prefix))
    out = torch.empty(B, K - 1, dtype=torch.long)
    hw = HeadWeights(*(t.to(dtype) for t in head)) if use_head else None
    _one_thread(lambda: torch_domino_head(hidden.to(dtype), bonus, lm.to(dtype), embed.to(dtype),
                                          hw, shift_label=shift, pure_prefix_len=prefix,
                                          out=out))
    return types.SimpleNamespace(tokens=out, logits=None)


@pytest.mark.sglang
@pytest.mark.parametrize("name", list(CASES))
def test_tp_seam_tokens_equal_reference(ranks, name):
    want = _reference(name).tokens
    for rank, res in enumerate(ranks):
        for path in ("graph", "eager"):
            assert_same_tokens(res[name][path], want, f"rank {rank} {name} {path}", V)


@pytest.mark.sglang
@pytest.mark.parametrize("name", list(CASES))
def test_tp_seam_collectives_per_block(ranks, name):
    """One all-gather per proposal (+1 per block when the head applies from step 0), one per
    block without a recurrence (no head, or a pure prefix covering the block), through the
    coordinator's gloo device group; building the sampler issues none."""
    from domino_sglang.core.sharded import collectives_per_block

    _, use_head, _, prefix, _ = CASES[name]
    want = collectives_per_block(K - 1, has_head=use_head, sampled=False,
                                 pure_prefix_len=prefix)
    assert want == (K - 1 + (prefix == 0) if use_head and prefix < K - 1 else 1)
    for rank, res in enumerate(ranks):
        assert res[name]["build_calls"] == [], res[name]["build_calls"]
        for path in ("graph_calls", "eager_calls"):
            assert res[name][path] == ["all_gather_into_tensor"] * want, \
                f"rank {rank} {name} {path}: {res[name][path]}, expected {want} all-gathers"


@pytest.mark.sglang
def test_tp_seam_layout(ranks):
    """Each rank got SGLang's TP coordinator, the torch head, its padded 32-row shard, and W2
    cut to the same rows as the LM head (zero-padded past V)."""
    _, _, _, _, head = _problem(False)
    w2 = head[3]
    vp = 32  # V = 37 padded to 64 (DEFAULT_VOCAB_PADDING_SIZE), split over 2 ranks
    for rank, res in enumerate(ranks):
        assert res["group"] == ("GroupCoordinator", WORLD, rank)
        r = res["head-shift-p1"]
        assert r["impl"] == f"torch, tp={WORLD}" and r["lm_rows"] == vp
        assert r["shard"] == (rank * vp, vp)
        want = torch.zeros(vp, R)
        real = w2[rank * vp:(rank + 1) * vp]
        want[: real.shape[0]] = real
        assert torch.equal(r["w2"], want)
        assert res["nohead-shift"]["w2"] is None


def test_planted_ties_cross_the_shard_edge():
    """The tie-breaking is exercised: some greedy step's max sits on rows of both ranks."""
    cross = 0
    for name in ("head-shift-p1", "head-noshift-p0", "nohead-shift"):
        logits = _reference(name).logits
        at_max = logits == logits.amax(-1, keepdim=True)
        cross += sum(len(set((at_max[b, i].nonzero()[:, 0] // 32).tolist())) > 1
                     for b in range(B) for i in range(K - 1))
    assert cross >= 2, f"only {cross} greedy steps tie across the shard edge"


# ---- the TP head alone ------------------------------------------------------------------------
def test_tp_head_checks_layout_and_shapes():
    from domino_sglang.sglang_plugin.head import TorchDominoHeadTP

    group = types.SimpleNamespace(world_size=2, rank_in_group=1,
                                  all_gather_into_tensor=lambda out, x: None)
    with pytest.raises(ValueError, match="shard_start=16: rank 1 with Vp=32 must start at 32"):
        TorchDominoHeadTP(group=group, shard_start=16, vocab_shard=32, vocab_size=37)
    with pytest.raises(ValueError, match="vocab_size=99"):
        TorchDominoHeadTP(group=group, shard_start=32, vocab_shard=32, vocab_size=99)
    fn = TorchDominoHeadTP(group=group, shard_start=32, vocab_shard=32, vocab_size=37)
    with pytest.raises(ValueError, match="32-row vocabulary shard"):
        fn(torch.zeros(1, K, D), torch.zeros(1, dtype=torch.long), torch.zeros(V, D),
           torch.zeros(32, D), None, shift_label=True, pure_prefix_len=0,
           out=torch.empty(1, K - 1, dtype=torch.long))


def test_vocab_shard_layout_refusals():
    from domino_sglang.sglang_plugin.head import vocab_shard_layout

    def shard(start, n, padded, added=0):
        return types.SimpleNamespace(padded_org_vocab_start_index=start,
                                     num_org_elements_padded=padded, org_vocab_start_index=start,
                                     num_org_elements=n, num_added_elements=added)

    lm = types.SimpleNamespace(weight=torch.zeros(32, D), shard_indices=shard(32, 5, 32))
    emb = types.SimpleNamespace(weight=torch.zeros(32, D), shard_indices=shard(32, 5, 32))
    start, vp, e = vocab_shard_layout(lm, emb, world=2, vocab_size=V)
    assert (start, vp) == (32, 32) and e is emb.weight
    full = types.SimpleNamespace(weight=torch.arange(64.0)[:, None].expand(64, D),
                                 shard_indices=shard(0, V, 64))
    _, _, cut = vocab_shard_layout(lm, full, world=2, vocab_size=V)  # replicated: cut
    assert cut[:5, 0].tolist() == [32, 33, 34, 35, 36] and not cut[5:].any()
    with pytest.raises(RuntimeError, match="--tp-size 2: the target lm_head .* no shard_indices"):
        vocab_shard_layout(types.SimpleNamespace(weight=torch.zeros(64, D)), emb, world=2,
                           vocab_size=V)
    with pytest.raises(RuntimeError, match="added vocabulary"):
        vocab_shard_layout(types.SimpleNamespace(weight=lm.weight,
                                                 shard_indices=shard(32, 5, 32, added=3)),
                           emb, world=2, vocab_size=V)
    with pytest.raises(RuntimeError, match="sharded unlike the lm_head"):
        vocab_shard_layout(lm, types.SimpleNamespace(weight=torch.zeros(16, D),
                                                     shard_indices=shard(16, 16, 16)),
                           world=2, vocab_size=V)


def test_head_impl_at_tp2():
    from domino_sglang.sglang_plugin.head import resolve_head_impl, torch_domino_head

    for env in ({}, {"DOMINO_HEAD_IMPL": "auto"}, {"DOMINO_HEAD_IMPL": "torch"}):
        assert resolve_head_impl("cuda", torch.bfloat16, env=env, tp_size=2) == \
            ("torch", torch_domino_head)
    with pytest.raises(ValueError, match="DOMINO_HEAD_IMPL=triton: .*--tp-size 1 only.*"
                                         "--tp-size 2"):
        resolve_head_impl("cuda", torch.bfloat16, env={"DOMINO_HEAD_IMPL": "triton"},
                          tp_size=2)


# ---- the real draft model: W2 cut to the LM head's shard ---------------------------------------
@pytest.fixture(scope="module")
def sg():
    from domino_sglang.sglang_plugin import register
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    assert register()
    return SpeculativeAlgorithm


def _resolve(target, draft, *extra):
    from sglang.srt.server_args import prepare_server_args

    return prepare_server_args(["--model-path", target, "--speculative-algorithm", "domino",
                                "--device", "cuda", "--skip-tokenizer-init",
                                "--speculative-draft-model-path", draft, *extra])


@pytest.mark.sglang
def test_draft_model_w2_vocab_shard(sg, tiny_pair):
    import sglang.srt.layers.rotary_embedding.base as rope_base
    from safetensors.torch import load_file
    from sglang.srt.runtime_context import get_context, get_parallel
    from sglang.srt.utils.hf_transformers_utils import get_config

    from domino_sglang.sglang_plugin.draft_model import DominoDraftModel

    target, draft = tiny_pair
    get_context().set_server_args(_resolve(target, draft))
    rope_base._is_cpu = True
    with get_parallel().override(tp_size=1, tp_rank=0, attn_tp_size=1, attn_tp_rank=0):
        model = DominoDraftModel(get_config(draft, trust_remote_code=False))
    sd = load_file(str(Path(draft) / "model.safetensors"))
    model.load_weights(iter(sd.items()))
    full = sd["embed_proj.2.weight"]
    v = full.shape[0]
    vp = (v + 1) // 2 + 3  # a shard reaching past V: zero-padded
    hw = model.domino_head_weights(vocab_shard=(vp, vp))
    assert hw.w2.shape == (vp, full.shape[1])
    assert torch.equal(hw.w2[: v - vp], full[vp:]) and not hw.w2[v - vp:].any()
    assert torch.equal(hw.w1, sd["embed_proj.0.weight"])  # W1 and the GRU stay replicated
    assert torch.equal(hw.w_ih, sd["prefix_gru.weight_ih_l0"])
    assert model.domino_head_weights(vocab_shard=(vp, vp)).w2 is hw.w2  # cut once
    assert dict(model.named_parameters())["embed_proj.2.weight"] is hw.w2  # the full one freed
    with pytest.raises(RuntimeError, match="already the vocabulary shard"):
        model.domino_head_weights(vocab_shard=(0, vp))


# ---- server arguments ---------------------------------------------------------------------------
@pytest.mark.sglang
def test_tp2_chain_is_accepted(sg, tiny_pair):
    target, draft = tiny_pair
    sa = _resolve(target, draft, "--tp-size", "2")
    assert sa.tp_size == 2 and sa.speculative_algorithm == "DOMINO"
    assert sa.speculative_num_draft_tokens == 8


@pytest.mark.sglang
@pytest.mark.parametrize("env, edit, match", [
    ({"DOMINO_TREE_TOPK": "2", "DOMINO_TREE_BUDGET": "16"}, None,
     r"--tp-size 2 with tree mode \(DOMINO_TREE_TOPK=2\).*--tp-size 1 only"),
    ({}, lambda c: c["dflash_config"].update(tree_topk=2, tree_budget=16),
     r"--tp-size 2 with tree mode \(dflash_config.tree_topk=2\).*DOMINO_TREE_TOPK"),
    ({"DOMINO_HEAD_IMPL": "triton"}, None,
     r"DOMINO_HEAD_IMPL=triton with --tp-size 2: .*--tp-size 1 only"),
], ids=["tree-env", "tree-config", "triton-head"])
def test_tp2_refusals(sg, tiny_pair, tmp_path, monkeypatch, env, edit, match):
    target, draft = tiny_pair
    if edit is not None:  # a copy of the drafter with an edited config.json
        draft = shutil.copytree(draft, tmp_path / "draft")
        cfg = json.loads((draft / "config.json").read_text())
        edit(cfg)
        (draft / "config.json").write_text(json.dumps(cfg))
        draft = str(draft)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tree = ("--attention-backend", "triton", "--grammar-backend", "none", "--page-size", "1")
    with pytest.raises(ValueError, match=match):
        _resolve(target, draft, "--tp-size", "2", *tree)
