"""Fused Domino head vs core.rollout.domino_rollout_ref: greedy exactly, sampled exactly on the
same uniforms (inverse CDF), on CPU (TRITON_INTERPRET) and at real shapes on a GPU."""

import types

import pytest
import torch

from domino_sglang.core.sampling import SamplingParams
from domino_sglang.ops.domino_head import (PreparedDominoHead, domino_head,
                                          domino_head_ref)

DEV = "cuda" if torch.cuda.is_available() else "cpu"

CPU_GREEDY = [  # (B, K, V, dtype, shift_label, pure_prefix_len)
    (1, 4, 100, torch.float32, True, 0),
    (3, 8, 77, torch.float32, False, 1),
    (3, 4, 100, torch.bfloat16, True, 1),
    (5, 16, 40, torch.bfloat16, True, 2),
]


def _ids(c):
    return f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}-shift{int(c[4])}-pure{c[5]}"


def _check_tokens(ref, out):
    mism = (ref.tokens != out.tokens.cpu()).nonzero()
    assert mism.numel() == 0, f"token mismatch at {mism[:5].tolist()}: ref " \
        f"{ref.tokens.tolist()} vs kernel {out.tokens.tolist()}"


@pytest.mark.parametrize("case", CPU_GREEDY, ids=_ids)
def test_domino_head_greedy(case, make_head_problem):
    b, k, v, dtype, shift, pure = case
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, DEV)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=shift, pure_prefix_len=pure)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=shift, pure_prefix_len=pure,
                      impl="triton")
    _check_tokens(ref, out)
    torch.testing.assert_close(out.logits.cpu(), ref.logits, rtol=1e-4, atol=1e-4)


VARIANTS = ["wide", "fused", "fused_pdl"]
CPU_VARIANT_CASES = CPU_GREEDY + [(2, 6, 64, torch.float32, True, 0)]  # B=2: FMA pre phase


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CPU_VARIANT_CASES, ids=_ids)
def test_domino_head_greedy_variants(case, variant, make_head_problem):
    """The faster launch sequences (kernels/domino_head_fast.py): same tokens as the spec."""
    b, k, v, dtype, shift, pure = case
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, DEV)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=shift, pure_prefix_len=pure)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=shift, pure_prefix_len=pure,
                      impl="triton", variant=variant)
    assert out.logits is None
    _check_tokens(ref, out)


@pytest.mark.parametrize("variant,b", [("wide", 8), ("fused_pdl", 1), ("fused", 1)])
def test_domino_head_variants_with_a_gpu_grid_of_ctas(variant, b, make_head_problem):
    """The correction grid of an H100 (64 CTAs at V=4096, 132 SMs) instead of the interpreter's
    3: every CTA's partial argmax is reduced, in the workspace sized for that grid (the server
    path: PreparedDominoHead.propose with static base logits)."""
    from domino_sglang.kernels.domino_head import DominoHeadWorkspace

    k, v = 16, 4096
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV, seed=7, rank=32)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=1)
    op = PreparedDominoHead(lm, emb, head, block_size=k, max_batch=b, variant=variant,
                            base_logits="fp32")
    op.buffers.ws = DominoHeadWorkspace(b, k, v, op.rank, op.gru, op.device,
                                        corr_override={"num_ctas": 64})
    assert op.ws.corr_config(b, op.device)["num_ctas"] == 64
    out = torch.full((b, k - 1), -1, dtype=torch.long, device=DEV)
    op.propose(hs, bonus, shift_label=True, pure_prefix_len=1, out=out)
    assert torch.equal(out.cpu(), ref.tokens), f"{(out.cpu() != ref.tokens).sum()} mismatches"


@pytest.mark.parametrize("variant,b", [("wide", 5), ("fused", 3), ("fused_pdl", 3),
                                       ("default", 5)])
def test_propose_reads_a_strided_bonus(variant, b, make_head_problem):
    """The server's bonus is a strided view (``input_ids.view(bs, B)[:, 0]``, stride B): every
    row's GRU must start from its own bonus, not from the next ids of row 0's block (the fast
    variants once read bonus[b] at offset b: lossless, but rows >= 1 drafted from MASK)."""
    from domino_sglang.core.drafter import HeadWeights

    k, v = 6, 64
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV, seed=11)
    w1 = head.w1.clone()
    w1[:, hs.shape[-1]:] *= 30  # the GRU state's columns: the proposals depend on the bonus
    head = HeadWeights(head.w_ih, head.w_hh, w1, head.w2)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=0)
    masked = domino_head_ref(hs.cpu(), torch.full_like(bonus.cpu(), 3), lm.cpu(), emb.cpu(),
                             _cpu(head), shift_label=True, pure_prefix_len=0)
    assert not torch.equal(masked.tokens[1:], ref.tokens[1:])  # a MASK bonus would be seen
    ids = torch.full((b, k), 3, dtype=torch.long, device=DEV)  # [bonus, MASK...] per row
    ids[:, 0] = bonus
    strided = ids.view(-1)[: b * k].view(b, k)[:, 0]
    assert strided.stride(0) == k and torch.equal(strided, bonus)
    op = PreparedDominoHead(lm, emb, head, block_size=k, max_batch=b, variant=variant,
                            base_logits="fp32")
    out = torch.full((b, k - 1), -1, dtype=torch.long, device=DEV)
    op.propose(hs, strided, shift_label=True, pure_prefix_len=0, out=out)
    assert torch.equal(out.cpu(), ref.tokens), f"{(out.cpu() != ref.tokens).sum()} mismatches"


@pytest.mark.parametrize("variant", ["default"] + VARIANTS)
def test_domino_head_greedy_ties_lowest_index(variant, make_head_problem):
    """Duplicate vocabulary rows (lm_head and W2) give exactly tied logits: lowest index wins,
    also across correction tiles / programs (the duplicates sit far apart)."""
    from domino_sglang.core.drafter import HeadWeights

    b, k, v = 3, 5, 96
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV, seed=4)
    lm, w2 = lm.clone(), head.w2.clone()
    for src in range(0, 32):  # every row r in [0, 32) duplicated at r + 32 and r + 64
        lm[src + 32] = lm[src + 64] = lm[src]
        w2[src + 32] = w2[src + 64] = w2[src]
    head = HeadWeights(head.w_ih, head.w_hh, head.w1, w2)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=1)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1,
                      impl="triton", variant=variant)
    _check_tokens(ref, out)


def test_domino_head_plain_dflash(make_head_problem):
    hs, bonus, lm, emb, _ = make_head_problem(2, 4, 50, torch.float32, DEV)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), None, shift_label=True,
                          pure_prefix_len=0)
    out = domino_head(hs, bonus, lm, emb, None, shift_label=True, pure_prefix_len=0, impl="triton")
    _check_tokens(ref, out)


def test_domino_head_no_table_reads_w_ih(make_head_problem):
    hs, bonus, lm, emb, head = make_head_problem(3, 4, 60, torch.float32, DEV)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=0)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0,
                      impl="triton", gi_table_dtype=None)
    _check_tokens(ref, out)


CPU_SAMPLED = [  # (B, K, V, dtype); rows mix greedy, temperature, top-k, top-p
    (1, 4, 100, torch.float32),
    (4, 4, 77, torch.float32),
    (4, 8, 50, torch.bfloat16),
]


def _mixed_params(b):
    temp = torch.tensor([0.8, 0.0, 1.3, 0.6])[:b] if b > 1 else torch.tensor([0.9])
    top_k = torch.tensor([0, 3, 10, 0])[:b] if b > 1 else torch.tensor([7])
    top_p = torch.tensor([1.0, 0.5, 0.9, 0.7])[:b] if b > 1 else torch.tensor([0.8])
    return SamplingParams(temp, top_k, top_p)


@pytest.mark.parametrize("case", CPU_SAMPLED, ids=lambda c: f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}")
def test_domino_head_sampled_same_uniforms(case, make_head_problem):
    b, k, v, dtype = case
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, DEV, seed=1)
    params = _mixed_params(b)
    u = torch.rand(b, k - 1, generator=torch.Generator().manual_seed(3))
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=0, sampling=params, uniforms=u)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0,
                      sampling=params, uniforms=u.to(DEV), impl="triton")
    _check_tokens(ref, out)
    torch.testing.assert_close(out.draft_probs.cpu(), ref.draft_probs, rtol=1e-4, atol=1e-5)


def test_domino_head_sampled_draws_equal_the_reference_at_every_breakpoint(make_head_problem):
    """The first proposal's draw, exactly: with uniforms just below and just above every
    breakpoint of the reference's CDF of q_0 (not the kernel's own q), the kernel draws the
    reference's token, which changes across each breakpoint. Between breakpoints the draw is
    constant, so the kernel samples from the reference's q_0."""
    v, delta = 12, 1e-4
    hs, bonus, lm, emb, head = make_head_problem(1, 2, v, torch.float32, DEV, seed=2)
    params1 = SamplingParams.make(1, temperature=1.0)
    ref0 = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                           shift_label=True, pure_prefix_len=0, sampling=params1,
                           uniforms=torch.full((1, 1), 0.5))
    cuts = [c for c in torch.cumsum(ref0.draft_probs[0, 0].double(), 0)[:-1].tolist()
            if 2 * delta < c < 1 - 2 * delta]
    u = torch.tensor([[c + s * delta] for c in cuts for s in (-1, 1)], dtype=torch.float32)
    reps = u.shape[0]
    hs_r, bonus_r = hs.expand(reps, -1, -1).contiguous(), bonus.expand(reps).contiguous()
    params = SamplingParams.make(reps, temperature=1.0)
    ref = domino_head_ref(hs_r.cpu(), bonus_r.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=0, sampling=params, uniforms=u)
    out = domino_head(hs_r, bonus_r, lm, emb, head, shift_label=True, pure_prefix_len=0,
                      sampling=SamplingParams.make(reps, temperature=1.0, device=DEV),
                      uniforms=u.to(DEV), impl="triton")
    _check_tokens(ref, out)
    pairs = ref.tokens[:, 0].view(-1, 2)
    assert len(cuts) >= v - 3 and (pairs[:, 0] < pairs[:, 1]).all(), pairs.tolist()


@pytest.mark.parametrize("with_head", [True, False], ids=["head", "dflash"])
def test_prepared_head_propose_static_buffers(with_head, make_head_problem):
    """The serving entry point: proposals into ``out`` from the static buffers (the same
    addresses call after call), a larger eager batch in the overflow set, the spec's tokens."""
    hs, bonus, lm, emb, head = make_head_problem(3, 4, 40, torch.float32, DEV, seed=4)
    head = head if with_head else None
    op = PreparedDominoHead(lm, emb, head, block_size=4, max_batch=2, enable_sampling=False,
                            base_logits="fp32")
    ptrs = [t.data_ptr() for t in op.buffers.tensors()]
    assert op.nbytes() == sum(t.numel() * t.element_size() for t in op.buffers.tensors()) + (
        op.weights.gi_table.numel() * 4 if with_head else 0)
    for bs, shift, pure in ((2, True, 1), (1, False, 0), (3, True, 0)):
        ref = domino_head_ref(hs[:bs].cpu(), bonus[:bs].cpu(), lm.cpu(), emb.cpu(),
                              _cpu(head) if with_head else None, shift_label=shift,
                              pure_prefix_len=pure)
        out = torch.full((bs, 3), -1, dtype=torch.long, device=DEV)
        op.propose(hs[:bs], bonus[:bs], shift_label=shift, pure_prefix_len=pure, out=out)
        _check_tokens(ref, types.SimpleNamespace(tokens=out))
        assert [t.data_ptr() for t in op.buffers.tensors()] == ptrs
    assert op._overflow is not None and op._overflow.rows == 4


def test_prepared_head_refusals(make_head_problem):
    hs, bonus, lm, emb, head = make_head_problem(1, 4, 40, torch.float32, DEV)
    with pytest.raises(ValueError, match="gi_table_dtype='fp16'"):
        PreparedDominoHead(lm, emb, head, block_size=4, gi_table_dtype="fp16")
    with pytest.raises(ValueError, match="base_logits='bf16'"):
        PreparedDominoHead(lm, emb, head, block_size=4, base_logits="bf16")
    with pytest.raises(ValueError, match="head vocabulary 40 != lm_head vocabulary 39"):
        PreparedDominoHead(lm[:39], emb, head, block_size=4)
    op = PreparedDominoHead(lm, emb, head, block_size=4)  # the Transformers backend's form
    out = torch.empty(1, 3, dtype=torch.long, device=DEV)
    with pytest.raises(ValueError, match="propose.. needs .*base_logits"):
        op.propose(hs, bonus, shift_label=True, pure_prefix_len=0, out=out)
    if DEV == "cpu":  # no fp32-output bf16 GEMM off CUDA: the lm_head dtype, said in the log
        bf = PreparedDominoHead(lm.bfloat16(), emb.bfloat16(), None, block_size=4,
                                base_logits="fp32")
        assert bf.base_dtype == torch.bfloat16 and bf.buffers.base.dtype == torch.bfloat16


def _cpu(head):
    from domino_sglang.core.drafter import HeadWeights

    return HeadWeights(*(t.cpu() for t in (head.w_ih, head.w_hh, head.w1, head.w2)))


def _qwen3_8b_head_problem(b, k):
    """Random bf16 head problem at Qwen3-8B dims (D=4096, G=1024, R=256, V=151936) on CUDA."""
    from domino_sglang.core.drafter import HeadWeights

    d, g, r, v = 4096, 1024, 256, 151936
    mk = lambda *s, sc: (torch.randn(*s, device="cuda") * sc).bfloat16()
    head = HeadWeights(mk(3 * g, d, sc=d ** -0.5), mk(3 * g, g, sc=g ** -0.5),
                       mk(r, d + g, sc=(d + g) ** -0.5), mk(v, r, sc=r ** -0.5 * 2))
    hs = mk(b, k, d, sc=1.0)
    lm, emb = mk(v, d, sc=d ** -0.5 * 2), mk(v, d, sc=1.0)
    bonus = torch.randint(0, v, (b,), device="cuda")
    return head, hs, lm, emb, bonus


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 16, 5])
@pytest.mark.parametrize("k", [4, 8, 16])
def test_domino_head_gpu_real_dims(b, k, make_head_problem):
    """Qwen3-8B head dims (D=4096, G=1024, R=256, V=151936), bf16 weights, exact tokens."""
    torch.manual_seed(0)
    head, hs, lm, emb, bonus = _qwen3_8b_head_problem(b, k)
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, impl="triton")
    assert (ref.tokens == out.tokens).float().mean() == 1.0, \
        f"{(ref.tokens != out.tokens).sum()} token mismatches"
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b", [1, 3, 5, 16])
def test_domino_head_gpu_variants_real_dims(b, variant):
    """GPU only: the variants at Qwen3-8B head dims, eager and replayed from a CUDA graph."""
    from domino_sglang.kernels.domino_head import DominoHeadWorkspace, prepare_head
    from domino_sglang.kernels.domino_head_fast import domino_head_launch

    torch.manual_seed(1)
    k = 16
    head, hs, lm, emb, bonus = _qwen3_8b_head_problem(b, k)
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1)
    weights = prepare_head(head, emb)
    v, r, g = head.w2.shape[0], head.w2.shape[1], head.w_hh.shape[1]
    ws = DominoHeadWorkspace(b, k, v, r, g, "cuda")
    z = hs[:, : k - 1]
    base = z.float() @ lm.float().t()
    fn = lambda: domino_head_launch(z, base, bonus, weights, ws, pure_prefix_len=1,
                                    variant=variant)
    tok = fn().clone()
    assert (tok == ref.tokens).all(), f"{(tok != ref.tokens).sum()} token mismatches (eager)"
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(2):
        ws.tokens.fill_(-1)
        graph.replay()
        torch.cuda.synchronize()
        assert (ws.tokens[:b] == ref.tokens).all(), "token mismatches (graph replay)"


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 7])
def test_domino_head_gpu_sampled(b, make_head_problem):
    hs, bonus, lm, emb, head = make_head_problem(b, 8, 5000, torch.bfloat16, "cuda", hidden=256,
                                                 gru=64, rank=64)
    params = SamplingParams(torch.rand(b) * 1.5, torch.randint(0, 50, (b,)), 0.5 + torch.rand(b) / 2)
    params = SamplingParams(*(t.cuda() for t in (params.temperature, params.top_k, params.top_p)))
    u = torch.rand(b, 7, device="cuda")
    ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0,
                          sampling=params, uniforms=u)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=0,
                      sampling=params, uniforms=u, impl="triton")
    assert (ref.tokens == out.tokens).all()
    torch.testing.assert_close(out.draft_probs, ref.draft_probs, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 16])
def test_prepared_head_propose_cuda_graph_real_dims(b):
    """GPU only: the serving path (``propose``: bf16 lm_head GEMM with fp32 output into the
    static buffer, fp32 GI table, auto variant) captured in a CUDA graph at Qwen3-8B dims and
    replayed on new inputs copied into the static ones: the spec's tokens, no new buffers."""
    torch.manual_seed(2)
    k = 16
    head, hs, lm, emb, bonus = _qwen3_8b_head_problem(b, k)
    op = PreparedDominoHead(lm, emb, head, block_size=k, max_batch=b, enable_sampling=False,
                            base_logits="fp32")
    assert op.base_dtype == torch.float32
    out = torch.full((b, k - 1), -1, dtype=torch.long, device="cuda")
    fn = lambda: op.propose(hs, bonus, shift_label=True, pure_prefix_len=1, out=out)
    fn()  # warm-up outside the capture (compiles the kernels)
    ptrs = [t.data_ptr() for t in op.buffers.tensors()]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(2):
        hs.copy_(torch.randn_like(hs, dtype=torch.float32))
        bonus.copy_(torch.randint(0, lm.shape[0], (b,), device="cuda"))
        ref = domino_head_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1)
        out.fill_(-1)
        graph.replay()
        torch.cuda.synchronize()
        assert (out == ref.tokens).all(), f"{(out != ref.tokens).sum()} token mismatches"
    assert [t.data_ptr() for t in op.buffers.tensors()] == ptrs


@pytest.mark.parametrize("variant", ["default", "wide", "fused"])
def test_domino_head_rows_split_into_blocks(variant, make_head_problem, monkeypatch):
    """A batch past the rows one correction / GRU program holds (``_launch.CORR_MAX_ROWS_X_RANK``,
    ``GRU_MAX_ROWS``; here 16): the default sequence splits the rows over a second grid axis and
    the wide / fused ones, which hold all rows in one program, hand over to it. Same tokens and
    logits as the spec."""
    from domino_sglang.kernels import _launch

    monkeypatch.setattr(_launch, "CORR_MAX_ROWS_X_RANK", 16 * 16)
    monkeypatch.setattr(_launch, "GRU_MAX_ROWS", 16)
    b, k, v = 20, 5, 64
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV, seed=5)
    ref = domino_head_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head),
                          shift_label=True, pure_prefix_len=1)
    out = domino_head(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1,
                      impl="triton", variant=variant)
    _check_tokens(ref, out)
    if out.logits is not None:
        torch.testing.assert_close(out.logits.cpu(), ref.logits, rtol=1e-4, atol=1e-4)
