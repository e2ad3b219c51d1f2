"""Verification: greedy against brute force, sampling against the exact target distribution."""

import itertools

import pytest
import torch

from domino_sglang.core import (chain_parents, chain_verify_greedy_ref, chain_verify_sample_ref,
                                tree_verify_greedy_ref, tree_verify_sample_ref)


def _random_tree(n, vocab, gen):
    """Random parents (parent < node) with distinct sibling tokens."""
    parents, tokens = [-1], [int(torch.randint(vocab, (1,), generator=gen))]
    used = {0: set()}
    for i in range(1, n):
        while True:
            p = int(torch.randint(i, (1,), generator=gen))
            free = [t for t in range(vocab) if t not in used[p]]
            if free:
                break
        t = free[int(torch.randint(len(free), (1,), generator=gen))]
        used[p].add(t)
        used[i] = set()
        parents.append(p)
        tokens.append(t)
    return torch.tensor(tokens), torch.tensor(parents)


def _brute_force_greedy(tokens, parents, pred):
    """Longest root path whose every node's token equals the target argmax at its parent."""
    n = len(tokens)
    best = [0]
    for leaf in range(n):
        path = [leaf]
        while path[-1] != 0:
            path.append(int(parents[path[-1]]))
        path = path[::-1]
        for j in range(1, len(path) + 1):
            ok = all(tokens[path[m]] == pred[path[m - 1]] for m in range(1, j))
            if ok and j > len(best):
                best = path[:j]
    return best


@pytest.mark.parametrize("n,vocab", [(2, 3), (7, 3), (16, 4), (40, 5), (64, 6)])
def test_tree_greedy_equals_brute_force(n, vocab):
    gen = torch.Generator().manual_seed(n)
    batch = 6
    trees = [_random_tree(n, vocab, gen) for _ in range(batch)]
    tokens = torch.stack([t for t, _ in trees])
    parents = torch.stack([p for _, p in trees])
    logits = torch.randn(batch, n, vocab, generator=gen)
    # plant matching paths so that long acceptances actually occur
    for r in range(batch):
        for j in range(1, n):
            if torch.rand(1, generator=gen) < 0.6:
                logits[r, parents[r, j], tokens[r, j]] += 10
    res = tree_verify_greedy_ref(tokens, parents, logits)
    pred = logits.argmax(-1)
    lengths = []
    for r in range(batch):
        best = _brute_force_greedy(tokens[r].tolist(), parents[r].tolist(), pred[r].tolist())
        assert res.accepted_nodes[r, : len(best)].tolist() == best
        assert (res.accepted_nodes[r, len(best):] == -1).all()
        assert res.accept_len[r] == len(best) - 1
        assert res.bonus[r] == pred[r, best[-1]]
        lengths.append(len(best) - 1)
    if n > 8:
        assert max(lengths) >= 2  # the test exercised multi-token acceptance


def test_chain_greedy_equals_path_tree():
    gen = torch.Generator().manual_seed(0)
    drafts = torch.randint(0, 3, (50, 7), generator=gen)
    logits = torch.randn(50, 8, 3, generator=gen)
    acc, bonus = chain_verify_greedy_ref(drafts, logits)
    bonus_tok = torch.zeros(50, 1, dtype=torch.long)
    res = tree_verify_greedy_ref(torch.cat([bonus_tok, drafts], 1),
                                 chain_parents(8).expand(50, -1), logits)
    assert torch.equal(acc, res.accept_len) and torch.equal(bonus, res.bonus)
    assert 0 <= int(acc.min()) and int(acc.max()) <= 7 and int(acc.max()) >= 2


def test_identical_distributions_accept_everything():
    gen = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(20, 6, 9, generator=gen), -1)
    drafts = torch.multinomial(p[:, :5].reshape(-1, 9), 1, generator=gen).view(20, 5)
    res = chain_verify_sample_ref(drafts, torch.zeros(20, dtype=torch.long), p, p[:, :5],
                                  torch.rand(20, 5, generator=gen), torch.rand(20, generator=gen))
    assert (res.accept_len == 5).all()


def _chi2_ok(counts, probs, n):
    """Chi-square statistic against expected counts is below a 1e-4-level critical bound."""
    expected = probs * n
    keep = expected > 5
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    bound = dof + 4.0 * (2 * dof) ** 0.5 + 10  # ~1e-4 tail for these dof
    return stat < bound, stat, bound


def test_tree_sampling_is_lossless_with_point_mass_siblings():
    """Root with 3 children (two of them with children): emitted (t1, t2) ~ target."""
    vocab = 5
    gen = torch.Generator().manual_seed(2)
    tokens = torch.tensor([0, 2, 0, 4, 1, 3, 2])
    parents = torch.tensor([-1, 0, 0, 0, 1, 1, 2])
    probs = torch.softmax(torch.randn(7, vocab, generator=gen) * 1.5, -1)
    n = 20000
    counts = torch.zeros(vocab, vocab)
    firsts = torch.zeros(vocab)
    u = torch.rand(n, 7, generator=gen)
    uf = torch.rand(n, generator=gen)
    child_of_root = {int(tokens[j]): j for j in (1, 2, 3)}
    for i in range(n):
        res = tree_verify_sample_ref(tokens[None], parents[None], probs[None], None,
                                     u[i:i + 1], uf[i:i + 1])
        path = [x for x in res.accepted_nodes[0].tolist() if x >= 0]
        emitted = [int(tokens[j]) for j in path[1:]] + [int(res.bonus[0])]
        firsts[emitted[0]] += 1
        if emitted[0] in child_of_root:
            counts[emitted[0], emitted[1]] += 1
    ok, stat, bound = _chi2_ok(firsts, probs[0], n)
    assert ok, (stat, bound)
    joint = torch.zeros(vocab, vocab)
    for a, j in child_of_root.items():
        joint[a] = probs[0, a] * probs[j]
    ok, stat, bound = _chi2_ok(counts.flatten(), joint.flatten() / joint.sum(),
                               int(counts.sum()))
    assert ok, (stat, bound)


def test_chain_sampling_with_draft_probs_is_lossless_and_a_wrong_rule_fails():
    vocab, k1 = 4, 2
    gen = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(k1 + 1, vocab, generator=gen) * 2, -1)
    q = torch.softmax(torch.randn(k1, vocab, generator=gen) * 2, -1)
    n = 20000
    drafts = torch.stack([torch.multinomial(q[i], n, replacement=True, generator=gen)
                          for i in range(k1)], 1)
    u = torch.rand(n, k1, generator=gen)
    uf = torch.rand(n, generator=gen)
    firsts = torch.zeros(vocab)
    naive = torch.zeros(vocab)  # "accept whatever the draft says" would follow q instead
    for i in range(n):
        res = chain_verify_sample_ref(drafts[i:i + 1], torch.zeros(1, dtype=torch.long), p[None],
                                      q[None], u[i:i + 1], uf[i:i + 1])
        first = int(drafts[i, 0]) if res.accept_len[0] > 0 else int(res.bonus[0])
        firsts[first] += 1
        naive[int(drafts[i, 0])] += 1
    assert _chi2_ok(firsts, p[0], n)[0]
    assert not _chi2_ok(naive, p[0], n)[0]
