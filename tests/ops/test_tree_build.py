"""Tree building and SGLang tree layout vs core.tree (build_tree_ref, tree_attention_mask)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domino_sglang.ops.tree_build import tree_build, tree_build_ref, tree_layout, tree_layout_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [  # (B, K, V, dtype, topk, budget)
    (1, 4, 100, torch.float32, 3, 64),
    (3, 5, 77, torch.float32, 2, 6),
    (3, 4, 60, torch.bfloat16, 4, 64),
    (2, 8, 40, torch.float32, 1, 64),  # a chain
]


def _cpu(head):
    from domino_sglang.core.drafter import HeadWeights

    return HeadWeights(*(t.cpu() for t in (head.w_ih, head.w_hh, head.w1, head.w2)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}-top{c[4]}-n{c[5]}")
def test_tree_build(case, make_head_problem):
    b, k, v, dtype, topk, budget = case
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, DEV)
    ref = tree_build_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head), shift_label=True,
                         pure_prefix_len=1, topk=topk, budget=budget)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=topk,
                     budget=budget, impl="triton")
    for name in ("tokens", "parents", "depth"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("parents,seq_lens", [
    ([[-1, 0, 0, 1, 1, 2, 3]], [5]),
    ([[-1, 0, 1, 2], [-1, 0, 0, 0]], [0, 300]),  # a chain and a star; a long prefix
    ([[-1, 0, 1, 0, 2, 1, 3, 4]], [7]),  # join order (the best-first tree): depths interleaved
], ids=["tree", "chain+star", "join-order"])
def test_tree_layout(parents, seq_lens):
    parents, seq_lens = torch.tensor(parents, device=DEV), torch.tensor(seq_lens, device=DEV)
    ref = tree_layout_ref(parents, seq_lens)
    out = tree_layout(parents, seq_lens, impl="triton")
    for name, r, o in zip(("mask", "positions", "retrieve", "next_token", "next_sibling"), ref, out):
        assert torch.equal(r, o.cpu()), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 5])
def test_tree_build_gpu_64_nodes(b, make_head_problem):
    hs, bonus, lm, emb, head = make_head_problem(b, 16, 32000, torch.bfloat16, "cuda", hidden=512,
                                                 gru=128, rank=64)
    ref = tree_build_ref(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=8,
                         budget=64)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=8,
                     budget=64, impl="triton")
    assert torch.equal(ref.parents, out.parents) and torch.equal(ref.tokens, out.tokens)


# --- the split-vocabulary top-k of the tree build (kernels.tree_build.row_topk_triton) -------

def _topk_ref(logits, topk):
    """fp32 log-softmax, the topk best (value desc, lowest index on ties)."""
    lp = torch.log_softmax(logits.float().cpu(), dim=-1)
    order = torch.sort(lp, dim=-1, descending=True, stable=True).indices[:, :topk]
    return lp.gather(-1, order), order


def _check_topk(logits, topk, chunk, **kw):
    from domino_sglang.kernels.tree_build import row_topk_triton

    val, idx = row_topk_triton(logits.to(DEV), topk, chunk=chunk, **kw)
    ref_val, ref_idx = _topk_ref(logits, topk)
    assert torch.equal(idx.cpu(), ref_idx), \
        f"indices: ref {ref_idx.tolist()} vs kernel {idx.tolist()}"
    torch.testing.assert_close(val.cpu(), ref_val, rtol=0, atol=1e-5)
    return idx.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("topk", [1, 2, 4])
@pytest.mark.parametrize("rows,vocab", [(1, 100), (5, 100), (3, 257)], ids=lambda x: str(x))
def test_row_topk(rows, vocab, topk, dtype):
    # chunk 32: V=100 ends in a 4-entry chunk (fewer entries than topk + 1 at topk 4); 5 rows
    # with 4 rows per merge program leave a 1-row program; bf16 rounding makes exact ties
    g = torch.Generator().manual_seed(rows * 1000 + vocab + topk)
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(dtype)
    _check_topk(logits, topk, chunk=32, rows_per_program=4)


@pytest.mark.parametrize("topk", [1, 2, 4])
def test_row_topk_ties_across_chunks(topk):
    """Equal logits straddling chunk boundaries (chunk 32): the lowest indices win."""
    g = torch.Generator().manual_seed(topk)
    logits = torch.rand(3, 130, generator=g) * 2 - 1
    logits[0, [31, 32, 63, 64, 96, 129]] = 5.0  # all ties: 31, 32, 63, 64
    logits[1, 100] = 7.0
    logits[1, [97, 33, 64, 0]] = 5.0  # the best, then ties 0, 33, 64
    logits[2] = 0.25  # a constant row: 0, 1, 2, 3 (rescanned: the rounding check is cautious)
    idx = _check_topk(logits, topk, chunk=32, rows_per_program=2)
    assert idx[0].tolist() == [31, 32, 63, 64][:topk]
    assert idx[1].tolist() == [100, 0, 33, 64][:topk]


@pytest.mark.parametrize("topk", [2, 4])
def test_row_topk_rounding_ties(topk):
    """Distinct logits that round to one log-softmax value, their order by logit opposite to
    their order by index inside one chunk: the chunk's best logits (idx 11-14) are not the best
    keys (lowest index among equal values: 8, 9, 10), so the merge must rescan the row."""
    logits = torch.full((1, 64), -100.0)
    logits[0, 3] = 64.0  # log Z == 0 exactly; lp = fl(x - 64)
    u = torch.finfo(torch.float32).eps * 8  # one ulp at 10
    for j, i in enumerate(range(8, 12)):
        logits[0, i] = -10.0 + j * u  # lp rounds to -74 for all (half ulp of 74 is 4 ulps of 10)
    logits[0, 12:15] = -10.0 + 3 * u
    assert len(set(torch.log_softmax(logits, -1)[0, 8:15].tolist())) == 1
    idx = _check_topk(logits, topk, chunk=32)
    assert idx[0].tolist() == [3, 8, 9, 10][:topk]


def test_tree_build_planted_ties(make_head_problem):
    """Every token has exact copies (lm_head, W2 and embedding rows repeat with period 20), so
    each row's top-k, the cumulative scores of siblings and of cousins all tie exactly."""
    from domino_sglang.core.drafter import HeadWeights

    b, k, v, topk = 2, 5, 100, 3
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV)
    rep = torch.arange(v, device=DEV) % 20
    lm, emb = lm[rep].contiguous(), emb[rep].contiguous()
    head = HeadWeights(head.w_ih, head.w_hh, head.w1, head.w2[rep].contiguous())
    ref = tree_build_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head), shift_label=True,
                         pure_prefix_len=1, topk=topk, budget=64)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=topk,
                     budget=64, impl="triton")
    for name in ("tokens", "parents", "depth"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(DEV != "cpu" or not _has_avx2(), reason="OpenBLAS's Haswell kernel: x86 + AVX2")
def test_tree_build_planted_ties_with_haswell_blas():
    """The planted-ties test again, with numpy's OpenBLAS forced to its Haswell kernel (what an
    AVX2 or AMD Zen CPU picks at run time). Its sgemm rounds identical rows differently by their
    position in the tile; the interpreter's dot must not depend on it (_launch.dot_mode 3)."""
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", TRITON_INTERPRET="1")
    node = f"{Path(__file__).resolve()}::test_tree_build_planted_ties"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("base_gemm", ["fp32", "auto"])
def test_prepared_tree_builder_reuses_its_workspace(make_head_problem, base_gemm):
    """The serving builder (head weights and workspace prepared once, the workspace grown and
    reused across rounds of different batch sizes) gives the one-shot tree_build's trees."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder

    hs, bonus, lm, emb, head = make_head_problem(3, 6, 96, torch.float32, "cpu")
    builder = PreparedTreeBuilder(lm, emb, head, block_size=6, topk=3, budget=12,
                                  impl="triton", base_gemm=base_gemm)
    for rows in (slice(0, 1), slice(0, 3), slice(1, 3), slice(0, 3)):
        want = tree_build(hs[rows], bonus[rows], lm, emb, head, shift_label=True,
                          pure_prefix_len=1, topk=3, budget=12, impl="triton")
        got = builder(hs[rows], bonus[rows], shift_label=True, pure_prefix_len=1)
        for name in ("tokens", "parents", "depth"):
            assert torch.equal(getattr(got, name), getattr(want, name)), (rows, name)
    assert builder.workspace(1).max_batch == 3 and builder.weights is not None
    with pytest.raises(ValueError, match="prepared for block 6"):
        builder(hs[:, :5], bonus, shift_label=True, pure_prefix_len=1)


def test_build_into_workspace_matches_the_call(make_head_problem):
    """The capture-ready path (static base logits, workspace views) gives the same trees."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder

    hs, bonus, lm, emb, head = make_head_problem(3, 6, 96, torch.float32, "cpu")
    builder = PreparedTreeBuilder(lm, emb, head, block_size=6, topk=3, budget=12, impl="triton")
    with pytest.raises(ValueError, match="static_buffers"):
        builder.build_into_workspace(hs, bonus, shift_label=True, pure_prefix_len=1)
    builder.static_buffers(3)
    for rows in (slice(0, 3), slice(1, 2)):
        tok, par, dep = builder.build_into_workspace(hs[rows], bonus[rows], shift_label=True,
                                                     pure_prefix_len=1)
        got = (tok.clone(), par.clone(), dep.clone())
        want = builder(hs[rows], bonus[rows], shift_label=True, pure_prefix_len=1)
        assert all(torch.equal(g, w) for g, w in zip(got, (want.tokens, want.parents,
                                                            want.depth)))


def test_tree_draft_sampler_as_the_capture_hook_calls_it(make_head_problem):
    """The draft-graph sampler, called with the flat draft output and the block input ids (the
    bonus at every B-th id, MASK elsewhere), leaves the trees of a separate builder's call in its
    static workspace, for the padded batch the graph runs and any batch below it; it refuses a
    batch beyond its static buffers and a call without input ids."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder, TreeDraftSampler

    hs, bonus, lm, emb, head = make_head_problem(4, 6, 96, torch.float32, "cpu")
    mk = lambda: PreparedTreeBuilder(lm, emb, head, block_size=6, topk=3, budget=12,
                                     impl="triton")
    sampler = TreeDraftSampler(mk(), max_batch=4, shift_label=True, pure_prefix_len=1)
    ref = mk()
    ws = sampler.ws
    for bs in (4, 2):
        ids = torch.full((bs, 6), 95, dtype=torch.long)
        ids[:, 0] = bonus[:bs]
        sampler(hs[:bs].reshape(bs * 6, -1), ids.reshape(-1))
        got = sampler.tree(bs)
        want = ref(hs[:bs], bonus[:bs], shift_label=True, pure_prefix_len=1)
        assert got.tokens.shape == (bs, ref.num_nodes)
        assert all(torch.equal(g, w) for g, w in zip((got.tokens, got.parents, got.depth),
                                                      (want.tokens, want.parents, want.depth)))
        assert got.tokens.data_ptr() != ws.tokens.data_ptr()  # a copy: the next build overwrites
    assert sampler.ws is ws  # static: what a captured graph points to is never reallocated
    with pytest.raises(RuntimeError, match="max batch 4"):
        sampler(torch.zeros(5 * 6, hs.shape[-1]), torch.zeros(30, dtype=torch.long))
    with pytest.raises(RuntimeError, match="input_ids"):
        sampler(hs.reshape(24, -1))
    with pytest.raises(ValueError, match="Triton tree build"):
        TreeDraftSampler(PreparedTreeBuilder(lm, emb, head, block_size=6, topk=3, budget=12,
                                             impl="ref"), max_batch=4, shift_label=True,
                         pure_prefix_len=1)


def test_prepared_tree_builder_gi_table_modes_and_memory(make_head_problem):
    """DOMINO_HEAD_GI_TABLE's modes reach the tree builder: "none" (no table, W_ih read every
    step) builds the fp32 table's trees exactly; nbytes counts the table once plus the workspace
    and the static base logits."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder

    hs, bonus, lm, emb, head = make_head_problem(2, 6, 96, torch.float32, "cpu")
    kw = dict(block_size=6, topk=3, budget=12, impl="triton")
    built = {}
    for mode in ("fp32", torch.float32, "bf16", "none"):
        b = PreparedTreeBuilder(lm, emb, head, gi_table_dtype=mode, **kw)
        table = b.weights.gi_table
        assert (table is None) == (mode == "none")
        assert table is None or table.dtype == {"bf16": torch.bfloat16}.get(mode, torch.float32)
        before = b.nbytes()
        assert before == (0 if table is None else table.numel() * table.element_size())
        b.static_buffers(2)
        assert b.nbytes() > before
        built[str(mode)] = b(hs, bonus, shift_label=True, pure_prefix_len=1)
    want = built["fp32"]
    for mode in ("torch.float32", "none"):
        got = built[mode]
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.parents, want.parents)
    with pytest.raises(ValueError, match="gi_table_dtype"):
        PreparedTreeBuilder(lm, emb, head, gi_table_dtype="fp8", **kw)


def test_tree_draft_sampler_self_check(make_head_problem, monkeypatch):
    """The start-up check passes on a sound sampler and names the problem otherwise: a build
    that does not repeat itself, or one that raises."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder, TreeDraftSampler

    hs, bonus, lm, emb, head = make_head_problem(2, 6, 96, torch.float32, "cpu")
    sampler = TreeDraftSampler(PreparedTreeBuilder(lm, emb, head, block_size=6, topk=3,
                                                   budget=12, impl="triton"),
                               max_batch=4, shift_label=True, pure_prefix_len=1)
    assert sampler.self_check(hs.shape[-1], hs.dtype, 96) is None
    real = sampler.builder.build_into_workspace
    calls = []

    def drifting(hidden, bonus, **kw):  # the second build differs from the first
        calls.append(1)
        return real(hidden * (1.0 if len(calls) == 1 else -1.0), bonus, **kw)

    monkeypatch.setattr(sampler.builder, "build_into_workspace", drifting)
    assert "differ" in sampler.self_check(hs.shape[-1], hs.dtype, 96)
    assert "RuntimeError" in sampler.self_check(hs.shape[-1] + 1, hs.dtype, 96)


@pytest.mark.gpu
def test_tree_draft_sampler_in_a_cuda_graph(make_head_problem):
    """The sampler captured as SGLang's draft graph captures it (padded batch 4), replayed on new
    draft outputs: the trees of an eager builder's call, for the real batch 3 inside it."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder, TreeDraftSampler

    hs, bonus, lm, emb, head = make_head_problem(4, 8, 4096, torch.bfloat16, "cuda")
    mk = lambda: PreparedTreeBuilder(lm, emb, head, block_size=8, topk=4, budget=24,
                                     impl="triton")
    sampler, ref = TreeDraftSampler(mk(), max_batch=4, shift_label=True, pure_prefix_len=1), mk()
    flat = hs.reshape(32, -1).clone()
    ids = torch.full((4, 8), 1, dtype=torch.long, device="cuda")
    ids[:, 0] = bonus
    ids = ids.reshape(-1).clone()
    sampler(flat, ids)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sampler(flat, ids)
    gen = torch.Generator(device="cuda").manual_seed(11)
    for _ in range(3):
        flat.copy_(torch.randn(flat.shape, generator=gen, device="cuda", dtype=flat.dtype))
        ids.view(4, 8)[:, 0].copy_(torch.randint(0, 4096, (4,), generator=gen, device="cuda"))
        graph.replay()
        got = sampler.tree(3)
        want = ref(flat.view(4, 8, -1)[:3], ids.view(4, 8)[:3, 0], shift_label=True,
                   pure_prefix_len=1)
        assert all(torch.equal(g, w) for g, w in zip((got.tokens, got.parents, got.depth),
                                                      (want.tokens, want.parents, want.depth)))


@pytest.mark.gpu
def test_tree_build_in_a_cuda_graph(make_head_problem):
    """Captured once, replayed on new hidden states and bonus tokens: the trees of the eager
    build (the same builder, the same GEMM path)."""
    from domino_sglang.ops.tree_build import PreparedTreeBuilder

    hs, bonus, lm, emb, head = make_head_problem(4, 8, 4096, torch.bfloat16, "cuda")
    builder = PreparedTreeBuilder(lm, emb, head, block_size=8, topk=4, budget=24, impl="triton")
    builder.static_buffers(4)
    static_h, static_b = hs.clone(), bonus.clone()
    builder.build_into_workspace(static_h, static_b, shift_label=True, pure_prefix_len=1)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = builder.build_into_workspace(static_h, static_b, shift_label=True,
                                           pure_prefix_len=1)
    gen = torch.Generator(device="cuda").manual_seed(7)
    for _ in range(3):
        static_h.copy_(torch.randn(hs.shape, generator=gen, device="cuda", dtype=hs.dtype))
        static_b.copy_(torch.randint(0, 4096, bonus.shape, generator=gen, device="cuda"))
        graph.replay()
        got = tuple(t.clone() for t in out)
        eager = builder.build_into_workspace(static_h, static_b, shift_label=True,
                                             pure_prefix_len=1)
        assert all(torch.equal(g, e) for g, e in zip(got, eager))


@pytest.mark.parametrize("topk", [2, 3])
def test_tree_build_rows_split_into_blocks(topk, make_head_problem, monkeypatch):
    """Frontier rows past what one program of the correction / GRU kernel holds are split over a
    second grid axis (a Qwen3-8B-shape tree of topk 4 at batch 64 has 256 rows: 288 KB of shared
    memory in one program, over the 227 KB an H100 allows). Here 16 rows per program, so
    B * topk = 18-27 rows run as two blocks: same tree as the reference."""
    from domino_sglang.kernels import _launch

    monkeypatch.setattr(_launch, "CORR_MAX_ROWS_X_RANK", 16 * 16)
    monkeypatch.setattr(_launch, "GRU_MAX_ROWS", 16)
    assert _launch.corr_settings(64, 16, 27, torch.device("cpu"))["BLOCK_B"] == 16
    b, k, v = 9, 4, 48
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, torch.float32, DEV, seed=3)
    ref = tree_build_ref(hs.cpu(), bonus.cpu(), lm.cpu(), emb.cpu(), _cpu(head), shift_label=True,
                         pure_prefix_len=1, topk=topk, budget=1 + topk + topk * topk)
    out = tree_build(hs, bonus, lm, emb, head, shift_label=True, pure_prefix_len=1, topk=topk,
                     budget=1 + topk + topk * topk, impl="triton")
    for name in ("tokens", "parents", "depth"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}-top{c[4]}-n{c[5]}")
@pytest.mark.parametrize("budget_cap", [None, 7])
def test_best_first_batched_matches_the_reference(case, budget_cap, make_head_problem):
    from domino_sglang.core.tree import build_tree_best_first_ref
    from domino_sglang.ops.tree_build import best_first_num_nodes, tree_build_best_first_torch

    b, k, v, dtype, topk, budget = case
    budget = budget if budget_cap is None else min(budget, budget_cap)
    hs, bonus, lm, emb, head = make_head_problem(b, k, v, dtype, "cpu")
    kw = dict(shift_label=True, pure_prefix_len=1, topk=topk, budget=budget)
    ref = build_tree_best_first_ref(hs, bonus, lm, emb, _cpu(head), **kw)
    out = tree_build_best_first_torch(hs, bonus, lm, emb, _cpu(head), **kw)
    assert out.num_nodes == ref.num_nodes == best_first_num_nodes(k, topk, budget)
    for name in ("tokens", "parents", "depth"):
        r, o = getattr(ref, name), getattr(out, name)
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs batched {o.tolist()}"
    off = tree_build_best_first_torch(hs, bonus, lm, emb, None, **kw)  # head off: base logits
    assert torch.equal(off.tokens, build_tree_best_first_ref(hs, bonus, lm, emb, None,
                                                             **kw).tokens)
