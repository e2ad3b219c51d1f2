"""The Transformers backend with the fused Triton head (the CUDA path; here under the Triton
interpreter): same drafts as the PyTorch reference rollout, output still the target's own."""

import pytest
import torch

from domino_sglang.hf.generate import domino_generate, prepare_head, target_generate
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target


@pytest.mark.parametrize("use_head", [True, False], ids=["domino", "head-off"])
def test_triton_head_matches_reference_rollout(use_head):
    vocab, block = 32, 5
    target = build_tiny_target(vocab_size=vocab, scale=2.0, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=vocab - 1,
                                 head_scale=10.0)
    head = prepare_head(target, drafter, use_head=use_head, head_impl="triton")
    assert head is not None and (head.head is None) == (not use_head)
    assert prepare_head(target, drafter, head_impl="auto") is None  # CPU: the reference
    for seed in range(1 if use_head else 2):  # the fused variant is slow interpreted
        prompt = torch.randint(2, vocab - 1, (1, 4 + seed),
                               generator=torch.Generator().manual_seed(seed))
        ref = domino_generate(target, drafter, prompt, max_new_tokens=16, use_head=use_head)
        out = domino_generate(target, drafter, prompt, max_new_tokens=16, use_head=use_head,
                              head=head)
        plain = target_generate(target, prompt, max_new_tokens=16)
        assert out.tokens == plain.tokens == ref.tokens
        assert out.accept_lens == ref.accept_lens  # the same drafts, round by round


def test_triton_head_sampled_matches_reference_rollout():
    vocab, block = 16, 4
    target = build_tiny_target(vocab_size=vocab, scale=1.5, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=vocab - 1,
                                 head_scale=5.0)
    head = prepare_head(target, drafter, head_impl="triton")
    prompt = torch.tensor([[2, 3, 4, 5]])
    for seed in range(2):
        ref = domino_generate(target, drafter, prompt, max_new_tokens=10, temperature=1.0,
                              generator=torch.Generator().manual_seed(seed))
        out = domino_generate(target, drafter, prompt, max_new_tokens=10, temperature=1.0,
                              generator=torch.Generator().manual_seed(seed), head=head)
        # same uniforms and the same q up to fp32 rounding: the same draws
        assert out.tokens == ref.tokens and out.accept_lens == ref.accept_lens


def test_prepared_head_must_match_use_head():
    target = build_tiny_target(vocab_size=16, scale=2.0, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=4, mask_token_id=15)
    head = prepare_head(target, drafter, use_head=False, head_impl="triton")
    with pytest.raises(ValueError, match="use_head=True"):
        domino_generate(target, drafter, torch.tensor([[2, 3]]), max_new_tokens=4, head=head)


@pytest.mark.parametrize("width", [1, 2, 4])
def test_narrow_verify_is_lossless(width):
    """verify_width < K-1: the target checks only the first drafts; output unchanged."""
    vocab, block = 32, 8
    target = build_tiny_target(vocab_size=vocab, scale=2.0, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=vocab - 1,
                                 head_scale=10.0)
    prompt = torch.tensor([[2, 3, 4, 5, 6]])
    plain = target_generate(target, prompt, max_new_tokens=30)
    out = domino_generate(target, drafter, prompt, max_new_tokens=30, verify_width=width)
    assert out.tokens == plain.tokens
    assert max(out.accept_lens) <= width + 1
    with pytest.raises(ValueError, match="verify_width"):
        domino_generate(target, drafter, prompt, max_new_tokens=4, verify_width=block)
