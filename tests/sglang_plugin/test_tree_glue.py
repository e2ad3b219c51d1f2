"""Tree-mode glue (``sglang_plugin.tree_glue``) on CPU: our trees -> SGLang 0.5.17's verify
tensors, SGLang's own greedy tree accept (the Triton twin ``verify_tree_greedy_triton`` under
TRITON_INTERPRET=1) against ``core.verify.tree_verify_greedy_ref``, and the commit (slot
permutation / KV moves, draft-KV hidden rows, next_token_ids rows)."""

import os

import pytest
import torch

from domino_sglang.core.tree import build_tree_ref, tree_attention_mask
from domino_sglang.core.verify import chain_verify_greedy_ref, tree_verify_greedy_ref
from domino_sglang.sglang_plugin import tree_glue as tg


def random_tree(bs, n, topk, vocab, gen):
    """Depth-ordered random trees like build_tree_ref's (<= topk nodes per depth, every
    parent at the previous depth) with random tokens."""
    parents = torch.full((bs, n), -1, dtype=torch.long)
    for b in range(bs):
        prev, i = [0], 1
        while i < n:
            width = int(torch.randint(1, topk + 1, (1,), generator=gen))
            cur = []
            for _ in range(min(width, n - i)):
                parents[b, i] = prev[int(torch.randint(len(prev), (1,), generator=gen))]
                cur.append(i)
                i += 1
            prev = cur
    tokens = torch.randint(vocab, (bs, n), generator=gen)
    return tokens, parents


def target_logits_following(tokens, parents, vocab, gen, p_follow=0.7):
    """Target logits whose argmax at a node is often one of its children's tokens."""
    bs, n = tokens.shape
    logits = torch.randn(bs, n, vocab, generator=gen)
    for b in range(bs):
        for j in range(n):
            kids = [c for c in range(1, n) if int(parents[b, c]) == j]
            if kids and float(torch.rand(1, generator=gen)) < p_follow:
                c = kids[int(torch.randint(len(kids), (1,), generator=gen))]
                logits[b, j, int(tokens[b, c])] += 20.0
    return logits


def sglang_greedy_accept(vt: tg.TreeVerifyTensors, target_predict, bs, n):
    from sglang.srt.speculative.eagle_utils import verify_tree_greedy_triton

    predicts, accept_index, accept_num = tg.alloc_accept_buffers(bs, n, vt.max_depth)
    verify_tree_greedy_triton(predicts, accept_index, accept_num, vt.candidates,
                              vt.retrieve_index, vt.retrieve_next_token,
                              vt.retrieve_next_sibling, target_predict)
    return tg.accept_from_sglang(predicts, accept_index, accept_num, n)


needs_interp = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="SGLang's Triton twin needs CUDA or TRITON_INTERPRET=1")


@pytest.fixture(scope="module")
def sg_utils():
    from sglang.srt.speculative import eagle_utils

    return eagle_utils


@pytest.mark.sglang
@needs_interp
@pytest.mark.parametrize("seed, bs, n, topk, block", [
    (0, 3, 9, 2, 6), (1, 2, 13, 4, 5), (2, 4, 7, 1, 7), (3, 1, 16, 3, 8)])
def test_sglang_greedy_tree_accept_matches_reference(sg_utils, seed, bs, n, topk, block):
    gen = torch.Generator().manual_seed(seed)
    vocab = 11  # small: duplicate sibling tokens happen (first sibling wins in both)
    tokens, parents = random_tree(bs, n, topk, vocab, gen)
    depth = tree_attention_mask(parents).sum(-1) - 1
    block = max(block, int(depth.max()) + 1)
    logits = target_logits_following(tokens, parents, vocab, gen)
    seq_lens = torch.randint(1, 20, (bs,), generator=gen)
    vt = tg.build_tree_verify_tensors(tokens, parents, seq_lens, block_size=block, impl="ref")
    got = sglang_greedy_accept(vt, logits.argmax(-1), bs, n)
    ref = tree_verify_greedy_ref(tokens, parents, logits)
    assert torch.equal(got.accept_len, ref.accept_len)
    assert torch.equal(got.bonus, ref.bonus)
    d = vt.max_depth
    assert torch.equal(got.path, ref.accepted_nodes[:, :d])
    assert torch.equal(got.commit_lens, (ref.accept_len + 1).to(torch.int32))
    assert int(got.accept_len.max()) > 0  # the generator made some acceptance happen


@pytest.mark.sglang
@needs_interp
def test_sglang_greedy_accept_on_built_trees(sg_utils):
    """Trees from build_tree_ref (the Domino tree builder, head off) verified by SGLang."""
    gen = torch.Generator().manual_seed(7)
    bs, k, dim, vocab, topk, budget = 2, 5, 16, 23, 3, 10
    hidden = torch.randn(bs, k, dim, generator=gen)
    lm_head = torch.randn(vocab, dim, generator=gen)
    embed = torch.randn(vocab, dim, generator=gen)
    bonus = torch.randint(vocab, (bs,), generator=gen)
    tree = build_tree_ref(hidden, bonus, lm_head, embed, None, shift_label=False,
                          pure_prefix_len=0, topk=topk, budget=budget)
    n = tree.num_nodes
    logits = target_logits_following(tree.tokens, tree.parents, vocab, gen, p_follow=0.8)
    vt = tg.build_tree_verify_tensors(tree.tokens, tree.parents, torch.tensor([3, 9]),
                                      block_size=k + 1, impl="ref")
    got = sglang_greedy_accept(vt, logits.argmax(-1), bs, n)
    ref = tree_verify_greedy_ref(tree.tokens, tree.parents, logits)
    assert torch.equal(got.accept_len, ref.accept_len) and torch.equal(got.bonus, ref.bonus)
    assert torch.equal(vt.positions.view(bs, n), torch.tensor([3, 9])[:, None] + tree.depth)


@pytest.mark.sglang
@needs_interp
def test_chain_tree_matches_dflash_chain_accept(sg_utils):
    """A path-shaped tree accepts exactly like DFlash's chain accept."""
    from sglang.srt.speculative.dflash_utils import compute_dflash_correct_drafts_and_bonus

    gen = torch.Generator().manual_seed(3)
    bs, n, vocab = 4, 6, 9
    parents = tg.causal_chain_parents(bs, n)
    tokens = torch.randint(vocab, (bs, n), generator=gen)
    logits = target_logits_following(tokens, parents, vocab, gen, p_follow=0.8)
    pred = logits.argmax(-1)
    vt = tg.build_tree_verify_tensors(tokens, parents, torch.full((bs,), 5), block_size=n,
                                      impl="ref")
    got = sglang_greedy_accept(vt, pred, bs, n)
    acc, bonus = compute_dflash_correct_drafts_and_bonus(candidates=tokens, target_predict=pred)
    ref_acc, ref_bonus = chain_verify_greedy_ref(tokens[:, 1:], logits)
    assert torch.equal(got.accept_len, acc.long()) and torch.equal(got.accept_len, ref_acc)
    assert torch.equal(got.bonus, bonus.long()) and torch.equal(got.bonus, ref_bonus)
    out = tg.out_tokens_from_path(tokens, got.path, got.accept_len, got.bonus, n)
    for b in range(bs):
        a = int(acc[b])
        assert out[b, :a].tolist() == tokens[b, 1:a + 1].tolist()
        assert int(out[b, a]) == int(bonus[b])


def test_full_mask_layout():
    parents = torch.tensor([[-1, 0, 0, 1, 2], [-1, 0, 1, 2, 3]])
    seq_lens = torch.tensor([3, 2])
    vt = tg.build_tree_verify_tensors(torch.arange(10).view(2, 5), parents, seq_lens,
                                      block_size=5, impl="ref")
    n = 5
    lens = tg.full_mask_len(seq_lens, n)
    assert vt.custom_mask.dtype == torch.bool
    assert vt.custom_mask.numel() == int(lens.sum())
    anc = tree_attention_mask(parents)
    off = 0
    for b in range(2):
        s = int(seq_lens[b])
        m = vt.custom_mask[off: off + n * (s + n)].view(n, s + n)
        assert bool(m[:, :s].all())
        assert torch.equal(m[:, s:], anc[b])
        off += n * (s + n)
    # the chain's FULL mask is the causal verify mask
    chain = vt.custom_mask[n * (3 + n):].view(n, 2 + n)[:, 2:]
    assert torch.equal(chain, torch.tril(torch.ones(n, n, dtype=torch.bool)))
    assert vt.positions.tolist() == [3, 4, 4, 5, 5, 2, 3, 4, 5, 6]
    assert vt.retrieve_index.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert vt.retrieve_next_token[0].tolist() == [1, 3, 4, -1, -1]
    assert vt.retrieve_next_sibling[0].tolist() == [-1, 2, -1, -1, -1]
    assert vt.max_depth == 5 and tg.tree_max_path_nodes(9, 4) == 4


def _random_paths(gen, bs, n, d):
    """Random accepted paths (increasing node ids from 0) and lengths."""
    path = torch.full((bs, d), -1, dtype=torch.long)
    acc = torch.zeros(bs, dtype=torch.long)
    for b in range(bs):
        a = int(torch.randint(0, d, (1,), generator=gen))
        nodes = sorted(torch.randperm(n - 1, generator=gen)[:a].add(1).tolist())
        path[b, 0] = 0
        path[b, 1:a + 1] = torch.tensor(nodes, dtype=torch.long)
        acc[b] = a
    return path, acc


def test_commit_permutation_and_moves_commit_the_path():
    gen = torch.Generator().manual_seed(11)
    bs, n, d = 5, 12, 6
    path, acc = _random_paths(gen, bs, n, d)
    path[0, 1:3] = torch.tensor([2, 3])  # the overlapping case [0, 2, 3]
    acc[0] = 2
    path[0, 3:] = -1
    seq_lens = torch.tensor([4, 0, 7, 2, 9])
    req_pool = torch.tensor([3, 0, 4, 1, 2])
    req_to_token = torch.randperm(10_000, generator=gen)[: 5 * 40].view(5, 40).clone()
    verify_loc = req_to_token[req_pool[:, None], seq_lens[:, None] + torch.arange(n)]
    kv = torch.randn(10_000, generator=gen)  # one scalar of "KV" per slot
    node_kv = kv[verify_loc]  # the target wrote node i's KV at verify_loc[b, i]

    perm = tg.commit_permutation(path, acc, n)
    assert torch.equal(perm.sort(dim=1).values, torch.arange(n).expand(bs, n))
    locs = tg.permute_verify_locs(verify_loc, perm)
    r2t = req_to_token.clone()
    tg.write_req_to_token_rows(r2t, req_pool, seq_lens, locs)
    # owned slots unchanged as a set; positions prefix+d name the path node's slot
    assert torch.equal(r2t.sort(dim=1).values, req_to_token.sort(dim=1).values)
    kv_moved = kv.clone()
    tgt, src = tg.accepted_kv_moves(verify_loc, path, acc)
    kv_moved[tgt] = kv_moved[src]  # gather-then-scatter (move_kv_cache_native semantics)
    for b in range(bs):
        for dd in range(int(acc[b]) + 1):
            node = int(path[b, dd])
            assert int(perm[b, dd]) == node
            pos = int(seq_lens[b]) + dd
            assert float(kv[r2t[req_pool[b], pos]]) == float(node_kv[b, node])
            assert float(kv_moved[req_to_token[req_pool[b], pos]]) == float(node_kv[b, node])
        rest = perm[b, int(acc[b]) + 1:].tolist()
        assert rest == sorted(rest)


def test_gather_path_rows_and_out_tokens():
    gen = torch.Generator().manual_seed(5)
    bs, n, d, h = 3, 8, 5, 4
    path, acc = _random_paths(gen, bs, n, d)
    hidden = torch.randn(bs * n, h, generator=gen)
    rows = tg.gather_path_rows(hidden, path, n, width=6).view(bs, 6, h)
    tokens = torch.randint(100, (bs, n), generator=gen)
    bonus = torch.randint(100, (bs,), generator=gen)
    out = tg.out_tokens_from_path(tokens, path, acc, bonus, stride=n)
    assert out.shape == (bs, n)
    for b in range(bs):
        a = int(acc[b])
        for dd in range(a + 1):
            assert torch.equal(rows[b, dd], hidden.view(bs, n, h)[b, int(path[b, dd])])
        assert out[b, :a].tolist() == [int(tokens[b, int(path[b, j])]) for j in range(1, a + 1)]
        assert int(out[b, a]) == int(bonus[b])
    assert tg.proposal_rows_for_tree(torch.tensor([[0, 1, 1, 2]])).tolist() == [[-1, 0, 0, 1]]


@pytest.mark.sglang
def test_tree_worker_imports_and_mask_policy_hook(sg_utils, monkeypatch):
    """The tree worker imports against SGLang 0.5.17, and its mask-policy AFTER hook forces a
    captured mask only when the published serve config is in tree mode."""
    from sglang.srt.speculative.dflash_utils import resolve_dflash_verify_mask_policy
    from sglang.srt.speculative.dflash_worker_v2 import DFlashWorkerV2

    from domino_sglang.sglang_plugin import tree_worker as tw

    assert issubclass(tw.DominoTreeWorkerV2, DFlashWorkerV2)
    assert "forward_batch_generation" in vars(tw.DominoTreeWorkerV2)

    class TritonAttnBackend:  # name-matched stand-in: DFlash captures it without a mask
        pass

    res = resolve_dflash_verify_mask_policy(TritonAttnBackend())
    assert res == ("TritonAttnBackend", False)
    from domino_sglang.sglang_plugin.serve_config import DominoServeConfig

    chain = DominoServeConfig(block_size=8, num_verify_tokens=8, drafter_block_size=8)
    tree = DominoServeConfig(block_size=8, num_verify_tokens=16, drafter_block_size=8,
                             tree_topk=4, tree_budget=16)
    for published, want in ((None, None), (chain, None), (tree, ("TritonAttnBackend", True))):
        monkeypatch.setattr(tw, "current_serve_config", lambda c=published: c)
        assert tw.tree_mask_policy(res, TritonAttnBackend()) == want


def test_planted_wrong_residual_bonus_draws_from_p_at_the_last_accepted_node():
    """The tree power check's wrong verifier: the bonus follows the full p of the node the
    accepted path ends at (the right law only at a leaf), whatever the rejected children."""
    bs, n, v = 4000, 5, 6
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(bs, n, v, generator=gen), -1)
    probs[:] = probs[0]  # the same distributions in every row: frequencies are comparable
    path = torch.tensor([[0, 2, -1], [0, -1, -1]]).repeat(bs // 2, 1)
    accept_len = torch.tensor([1, 0]).repeat(bs // 2)
    acc = tg.TreeAcceptResult(path, accept_len, (accept_len + 1).to(torch.int32),
                              torch.zeros(bs, dtype=torch.int64))
    bonus = tg.planted_wrong_residual_bonus(acc, probs, torch.rand(bs, generator=gen))
    for r, node in ((0, 2), (1, 0)):  # rows ending at node 2 and at the root
        got = torch.bincount(bonus[r::2], minlength=v).float() / (bs // 2)
        assert (got - probs[0, node]).abs().max() < 0.04, (node, got, probs[0, node])
