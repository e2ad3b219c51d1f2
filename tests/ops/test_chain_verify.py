"""Chain verification (the path-shaped tree through the tree walk kernel) vs core / spec refs."""

import pytest
import torch

from domino_sglang.ops.chain_verify import (chain_verify_greedy, chain_verify_greedy_ref,
                                            chain_verify_sample, chain_verify_sample_ref)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("b,k,v,dtype", [(1, 4, 100, torch.float32), (5, 8, 77, torch.float32),
                                         (3, 16, 50, torch.bfloat16)], ids=lambda x: str(x))
def test_chain_verify_greedy(b, k, v, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, k, v, generator=g).to(dtype)
    pred = logits.float().argmax(-1)
    draft = torch.where(torch.rand(b, k - 1, generator=g) < 0.8, pred[:, :-1],
                        torch.randint(0, v, (b, k - 1), generator=g))
    ref = chain_verify_greedy_ref(draft, logits.float())
    out = chain_verify_greedy(draft.to(DEV), logits.to(DEV), impl="triton")
    for name, r, o in zip(("accept_len", "bonus"), ref, out):
        assert torch.equal(r, o.cpu()), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


@pytest.mark.parametrize("use_q", [False, True], ids=["point", "draft_probs"])
@pytest.mark.parametrize("b,k,v", [(1, 4, 40), (6, 8, 33)], ids=lambda x: str(x))
def test_chain_verify_sample_same_uniforms(use_q, b, k, v):
    g = torch.Generator().manual_seed(2)
    target = torch.softmax(torch.randn(b, k, v, generator=g), -1)
    draft_probs = torch.softmax(torch.randn(b, k - 1, v, generator=g), -1) if use_q else None
    draft = torch.randint(0, 3, (b, k - 1), generator=g)
    bonus = torch.randint(0, v, (b,), generator=g)
    u, uf = torch.rand(b, k - 1, generator=g), torch.rand(b, generator=g)
    ref = chain_verify_sample_ref(draft, bonus, target, draft_probs, u, uf)
    out = chain_verify_sample(draft.to(DEV), bonus.to(DEV), target.to(DEV),
                              draft_probs.to(DEV) if use_q else None, u.to(DEV), uf.to(DEV),
                              impl="triton")
    for name in ("accept_len", "bonus", "accepted_nodes"):
        r, o = getattr(ref, name), getattr(out, name).cpu()
        assert torch.equal(r, o), f"{name}: ref {r.tolist()} vs kernel {o.tolist()}"


def test_chain_sampled_acceptance_is_lossless():
    """Emitted first token (accepted draft or bonus) follows the target distribution."""
    b, v = 600, 6
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(v, generator=g) * 1.5, -1)
    q = torch.softmax(torch.randn(v, generator=g) * 1.5, -1)
    target = p.expand(b, 2, v).contiguous()
    qs = q.expand(b, 1, v).contiguous()
    draft = torch.multinomial(q, b, replacement=True, generator=g).view(b, 1)
    out = chain_verify_sample(draft.to(DEV), draft[:, 0].to(DEV), target.to(DEV), qs.to(DEV),
                              torch.rand(b, 1, generator=g).to(DEV), torch.rand(b, generator=g).to(DEV),
                              impl="triton")
    first = torch.where(out.accept_len.cpu() > 0, draft[:, 0], out.bonus.cpu())
    freq = torch.bincount(first, minlength=v).float() / b
    assert (freq - p).abs().max() < 0.07, f"emitted {freq.tolist()} vs target {p.tolist()}"
