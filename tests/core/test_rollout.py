"""The reference rollout against an oracle written with the drafter's own nn.GRU/embed_proj."""

import pytest
import torch
import torch.nn.functional as F

from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.core import (SamplingParams, domino_rollout_ref, gru_cell, logits_to_probs,
                                sample_from_probs)


@pytest.fixture(scope="module")
def pair():
    target = build_tiny_target(vocab_size=96)
    drafter = build_tiny_drafter(target, block_size=8, head_scale=30.0)
    return target, drafter


def _oracle(drafter, target, hidden, bonus, shift_label, prefix):
    """Greedy Domino rollout written directly with nn.GRU and nn.Sequential."""
    emb = target.get_input_embeddings()
    z = hidden[:, :-1] if shift_label else hidden[:, 1:]
    base = F.linear(z, target.lm_head.weight)
    _, state = drafter.prefix_gru(emb(bonus[:, None]))
    out = []
    for i in range(z.shape[1]):
        logits = base[:, i]
        if i >= prefix:
            logits = logits + drafter.embed_proj(torch.cat([z[:, i], state[0]], -1))
        tok = logits.argmax(-1)
        out.append(tok)
        _, state = drafter.prefix_gru(emb(tok[:, None]), state)
    return torch.stack(out, 1)


def test_gru_cell_equals_torch_gru(pair):
    _, drafter = pair
    x, s = torch.randn(3, 64), torch.randn(3, 32)
    _, ref = drafter.prefix_gru(x[:, None], s[None])
    w = drafter.head_weights()
    torch.testing.assert_close(gru_cell(x, s, w.w_ih, w.w_hh), ref[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift_label", [True, False])
@pytest.mark.parametrize("prefix", [0, 1, 3])
@torch.no_grad()
def test_greedy_rollout_matches_oracle(pair, shift_label, prefix):
    target, drafter = pair
    hidden, bonus = torch.randn(5, 8, 64), torch.randint(0, 96, (5,))
    got = domino_rollout_ref(hidden, bonus, target.lm_head.weight,
                             target.get_input_embeddings().weight, drafter.head_weights(),
                             shift_label=shift_label, pure_prefix_len=prefix)
    want = _oracle(drafter, target, hidden, bonus, shift_label, prefix)
    assert torch.equal(got.tokens, want)
    base = (hidden[:, :-1] if shift_label else hidden[:, 1:]) @ target.lm_head.weight.t()
    # the pure-prefix proposals use base logits only, and the head changes later ones
    assert torch.equal(got.tokens[:, :prefix], base[:, :prefix].argmax(-1))
    assert not torch.equal(got.tokens[:, prefix:], base[:, prefix:].argmax(-1))


@torch.no_grad()
def test_no_head_is_base_argmax(pair):
    target, _ = pair
    hidden, bonus = torch.randn(4, 8, 64), torch.randint(0, 96, (4,))
    got = domino_rollout_ref(hidden, bonus, target.lm_head.weight,
                             target.get_input_embeddings().weight, None, shift_label=False,
                             pure_prefix_len=0)
    assert torch.equal(got.tokens, (hidden[:, 1:] @ target.lm_head.weight.t()).argmax(-1))


@torch.no_grad()
def test_sampled_rollout_consumes_sampled_tokens(pair):
    target, drafter = pair
    hidden, bonus = torch.randn(3, 8, 64), torch.randint(0, 96, (3,))
    params = SamplingParams(torch.tensor([0.0, 0.7, 1.3]), torch.tensor([0, 20, 0]),
                            torch.tensor([1.0, 1.0, 0.8]))
    u = torch.rand(3, 7)
    args = (hidden, bonus, target.lm_head.weight, target.get_input_embeddings().weight,
            drafter.head_weights())
    got = domino_rollout_ref(*args, shift_label=True, pure_prefix_len=1, sampling=params,
                             uniforms=u)
    greedy = domino_rollout_ref(*args, shift_label=True, pure_prefix_len=1)
    assert torch.equal(got.tokens[0], greedy.tokens[0])  # temperature 0 row is greedy
    # each sampled token is the inverse-CDF draw from its own q, which is a distribution
    torch.testing.assert_close(got.draft_probs.sum(-1), torch.ones(3, 7))
    assert torch.equal(got.tokens, sample_from_probs(got.draft_probs, u))
    # q follows from the final logits of the sampled path
    torch.testing.assert_close(got.draft_probs, logits_to_probs(got.logits, params))
    assert (got.draft_probs[1].gt(0).sum(-1) <= 20).all()  # top-k 20
