"""Transformers backend: greedy output equals the target alone; sampling follows the target."""

import itertools

import pytest
import torch

from domino_sglang.hf.generate import domino_generate, target_generate
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target

EOS = 1


@pytest.mark.parametrize("vocab,scale,block,use_head", [
    (16, 3.0, 4, True), (6, 1.0, 8, True), (32, 2.0, 16, True), (16, 3.0, 8, False)])
def test_greedy_equals_target_generate(vocab, scale, block, use_head):
    target = build_tiny_target(vocab_size=vocab, scale=scale, eos_token_id=EOS)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=vocab - 1,
                                 head_scale=10.0)
    gen = torch.Generator().manual_seed(vocab + block)
    # a token the target emits mid-generation serves as EOS, so that EOS lands inside blocks
    probe = target_generate(target, torch.tensor([[2, 3, 4]]), max_new_tokens=12)
    eos = probe.tokens[7]
    eos_stops, multi_accept = 0, 0
    for i in range(8):
        prompt = torch.randint(2, vocab - 1, (1, 3 + 2 * i), generator=gen)
        max_new = 5 + 7 * i  # rarely a multiple of the block: ends mid-block
        ref = target.generate(prompt, max_new_tokens=max_new, do_sample=False,
                              eos_token_id=eos, pad_token_id=0)[0, prompt.shape[1]:].tolist()
        out = domino_generate(target, drafter, prompt, max_new_tokens=max_new,
                              stop_token_ids=[eos], use_head=use_head)
        assert out.tokens == ref, f"prompt {i}"
        assert target_generate(target, prompt, max_new_tokens=max_new,
                               stop_token_ids=[eos]).tokens == ref
        assert all(1 <= a <= block for a in out.accept_lens)
        assert len(out.tokens) <= 1 + sum(out.accept_lens)
        eos_stops += ref[-1] == eos and len(ref) < max_new
        multi_accept += any(a > 1 for a in out.accept_lens)
    assert multi_accept > 0
    assert eos_stops > 0  # EOS landed inside a block for some prompt


def _exact_joint(target, prompt, vocab, length):
    """P(first `length` tokens) of plain sampling at T=1, by enumeration."""
    probs = {}
    with torch.no_grad():
        for seq in itertools.product(range(vocab), repeat=length - 1):
            ids = torch.tensor([list(prompt) + list(seq)])
            logits = target(ids).logits[0, len(prompt) - 1:].float()
            p = torch.softmax(logits, -1)
            base = 1.0
            for j, t in enumerate(seq):
                base *= float(p[j, t])
            for t in range(vocab):
                probs[seq + (t,)] = base * float(p[-1, t])
    return probs


def test_sampling_follows_the_target_distribution():
    vocab, length, n = 5, 3, 2500
    target = build_tiny_target(vocab_size=vocab, scale=1.5, eos_token_id=EOS)
    drafter = build_tiny_drafter(target, block_size=4, mask_token_id=vocab - 1, head_scale=5.0)
    prompt = [2, 3, 0, 4]
    exact = _exact_joint(target, prompt, vocab, length)
    gen = torch.Generator().manual_seed(0)
    counts = dict.fromkeys(exact, 0)
    accepted = 0
    for _ in range(n):
        out = domino_generate(target, drafter, torch.tensor([prompt]), max_new_tokens=length,
                              temperature=1.0, generator=gen)
        counts[tuple(out.tokens)] += 1
        accepted += out.accept_lens[0] > 1
    assert accepted > n // 5  # drafts are often accepted, so the rejection rule is exercised
    expected = torch.tensor([exact[k] * n for k in exact])
    observed = torch.tensor([float(counts[k]) for k in exact])
    keep = expected > 5
    stat = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    assert stat < dof + 4 * (2 * dof) ** 0.5 + 10, (stat, dof)


def test_bad_arguments():
    target = build_tiny_target(vocab_size=16)
    drafter = build_tiny_drafter(target, block_size=4, mask_token_id=15)
    ids = torch.tensor([[2, 3]])
    with pytest.raises(ValueError, match="temperature=-1"):
        domino_generate(target, drafter, ids, max_new_tokens=4, temperature=-1)
    with pytest.raises(ValueError, match="top_p=0"):
        domino_generate(target, drafter, ids, max_new_tokens=4, temperature=1, top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        domino_generate(target, drafter, ids, max_new_tokens=0)
    with pytest.raises(ValueError, match="input_ids"):
        domino_generate(target, drafter, ids[0], max_new_tokens=4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_drafter_input_is_bonus_then_masks_every_round(temperature):
    """Every round the drafter reads embed([bonus, MASK x (K-1)]), bonus = the last committed
    token, recomputed here from scratch out of the output and the accept lengths (a drafter
    that read the previous round's drafts once passed the losslessness tests above)."""
    vocab, block, mask = 16, 6, 15
    target = build_tiny_target(vocab_size=vocab, scale=3.0, eos_token_id=EOS)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=mask, head_scale=10.0)
    embed = target.get_input_embeddings().weight
    seen = []
    drafter.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    prompt = torch.tensor([[2, 3, 4, 5]])
    out = domino_generate(target, drafter, prompt, max_new_tokens=40, temperature=temperature,
                          generator=torch.Generator().manual_seed(1))
    assert len(seen) == out.rounds >= 4
    assert any(a > 1 for a in out.accept_lens)  # drafts from earlier rounds existed to leak
    committed = 1  # the prefill's token
    for r, embeds in enumerate(seen):
        bonus = out.tokens[committed - 1]
        expected = embed[torch.tensor([bonus] + [mask] * (block - 1))][None]
        assert torch.equal(embeds, expected), f"round {r}: drafter input is not [bonus, MASK...]"
        committed += out.accept_lens[r]
