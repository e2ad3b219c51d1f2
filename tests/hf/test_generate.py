"""Transformers backend: greedy output equals the target alone; sampling follows the target."""

import pytest
import torch

import domino_sglang.hf.generate as G
from domino_sglang.core.rollout import domino_rollout_ref
from domino_sglang.core.sampling import sample_from_probs
from domino_sglang.hf.generate import domino_generate, target_generate
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.core import chain_verify_sample_ref

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


def _chi2_bound(dof: int, z: float = 4.0) -> float:
    """The chi-square quantile ~z sigmas up (Wilson-Hilferty), for dof >= 1."""
    c = 2 / (9 * dof)
    return dof * (1 - c + z * c ** 0.5) ** 3


def _sampled_rows(target, drafter, prompt, *, calls, length, seed, draft_sampling=True):
    """Run ``domino_generate`` ``calls`` times at T=1 (one CPU generator) and return, for every
    token a verification round emitted, (offset in its round, token, p, q): p the target's exact
    conditional (one independent batched forward over prompt + output), q the draft distribution
    that proposed that block position (None for the bonus after a fully accepted block). Also
    returns the results. The drafts' q are recorded by a spy around the rollout."""
    k = drafter.config.resolved_block_size
    rollouts = []

    def spy(*args, **kwargs):
        roll = domino_rollout_ref(*args, **kwargs)
        q = (roll.draft_probs[0] if draft_sampling else  # point masses on the argmax drafts
             torch.nn.functional.one_hot(roll.tokens[0], target.config.vocab_size))
        rollouts.append(q.double())
        return roll

    gen = torch.Generator().manual_seed(seed)
    outs, qs = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(G, "domino_rollout_ref", spy)
        for _ in range(calls):
            rollouts.clear()
            outs.append(domino_generate(target, drafter, torch.tensor([prompt]),
                                        max_new_tokens=length, temperature=1.0, generator=gen,
                                        draft_sampling=draft_sampling))
            qs.append(list(rollouts))
    seqs = torch.tensor([prompt + o.tokens for o in outs])  # no stop token: all `length` long
    with torch.no_grad():
        p_all = torch.softmax(target(seqs).logits.double(), -1)[:, len(prompt) - 1:-1]
    rows = []
    for o, q_rounds, p_seq in zip(outs, qs, p_all):
        pos = 1  # token 0 comes from the prefill (plain sampling)
        for a, q in zip(o.accept_lens, q_rounds):
            for j in range(min(a, length - pos)):
                rows.append((j, o.tokens[pos + j], p_seq[pos + j], q[j] if j < k - 1 else None))
            pos += a
    return rows, outs


def _distribution_problems(rows, vocab, block) -> list[str]:
    """The two checks that every emitted token x follows the target's conditional p (exact
    rejection sampling makes each one, given everything before it, a draw from p):
    1. a score aimed at the residual: sum of w(x) - E_p[w], w = q - p (the draft's excess at
       that position, fixed before x is drawn), normalised by its null standard deviation;
       a verifier that favours the draft's tokens pushes it up;
    2. a chi-square over (offset in the round, token) cells of observed vs expected counts
       (conservative: the variance of each count is below its expectation)."""
    problems = []
    score = var = 0.0
    obs = torch.zeros(block, vocab, dtype=torch.float64)
    exp = torch.zeros_like(obs)
    for j, x, p, q in rows:
        obs[j, x] += 1
        exp[j] += p
        if q is not None:
            w = q - p
            mean = float((p * w).sum())
            score += float(w[x]) - mean
            var += float((p * w * w).sum()) - mean ** 2
    z = score / var ** 0.5
    if abs(z) > 4.0:
        problems.append(f"draft-weighted score z = {z:.2f} (|z| > 4)")
    keep = exp > 5
    stat = float(((obs - exp)[keep] ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - int(keep.any(1).sum())  # each offset's counts sum to their total
    if stat > _chi2_bound(dof):
        problems.append(f"chi-square {stat:.1f} > {_chi2_bound(dof):.1f} (dof {dof})")
    return problems


def _sampling_setup():
    vocab, block = 5, 4
    target = build_tiny_target(vocab_size=vocab, scale=1.5, eos_token_id=EOS)
    drafter = build_tiny_drafter(target, block_size=block, mask_token_id=vocab - 1,
                                 head_scale=5.0)
    return vocab, block, target, drafter


@pytest.fixture
def one_thread():
    """Tiny models: one thread is ~7x faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sampling_follows_the_target_distribution(one_thread):
    """~1500 emitted tokens from 48 calls of 32 tokens, each checked against the target's
    exact conditional at its position (replaces 2500 calls of 3 tokens and a joint table)."""
    vocab, block, target, drafter = _sampling_setup()
    rows, outs = _sampled_rows(target, drafter, [2, 3, 0, 4], calls=48, length=32, seed=0)
    accept = [a for o in outs for a in o.accept_lens]
    assert sum(a > 1 for a in accept) > len(accept) // 5  # drafts are often accepted ...
    assert sum(a < block for a in accept) > len(accept) // 5  # ... and often rejected
    assert sum(q is not None for *_, q in rows) > 1000
    assert _distribution_problems(rows, vocab, block) == []


def test_point_mass_drafts_follow_the_target_distribution(one_thread):
    """draft_sampling=False (the server's T > 0 semantics, domino-eval --point-mass-drafts):
    argmax drafts verified as point masses; the same checks as above hold, the drafts are the
    greedy rollout's, and fewer are accepted than with sampled drafts on the same runs."""
    vocab, block, target, drafter = _sampling_setup()
    rows, outs = _sampled_rows(target, drafter, [2, 3, 0, 4], calls=48, length=32, seed=0,
                               draft_sampling=False)
    assert sum(q is not None for *_, q in rows) > 1000
    assert all(float(q.max()) == 1.0 for *_, q in rows if q is not None)
    assert _distribution_problems(rows, vocab, block) == []
    _, sampled = _sampled_rows(target, drafter, [2, 3, 0, 4], calls=48, length=32, seed=0)
    rounds = [sum(o.rounds for o in r) for r in (outs, sampled)]
    assert rounds[0] > rounds[1]  # 1223 vs 551 rounds when written


def _verify_with_wrong_residual(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                                uniform_final):
    """The planted bug: after a rejection, resample from p instead of normalised (p - q)+."""
    vr = chain_verify_sample_ref(draft_tokens, bonus, target_probs, draft_probs, uniforms,
                                 uniform_final)
    for r in range(draft_tokens.shape[0]):
        a = int(vr.accept_len[r])
        if a < draft_tokens.shape[1]:
            vr.bonus[r] = sample_from_probs(target_probs[r, a].float(), uniform_final[r])
    return vr


@pytest.mark.parametrize("draft_sampling", [True, False], ids=["sampled", "point-mass"])
def test_sampling_check_catches_a_wrong_residual(one_thread, monkeypatch, draft_sampling):
    """The same runs and checks with the planted bug must fail (the check has power), with
    sampled drafts and with point-mass drafts."""
    vocab, block, target, drafter = _sampling_setup()
    monkeypatch.setattr(G, "chain_verify_sample_ref", _verify_with_wrong_residual)
    rows, _ = _sampled_rows(target, drafter, [2, 3, 0, 4], calls=48, length=32, seed=0,
                            draft_sampling=draft_sampling)
    problems = _distribution_problems(rows, vocab, block)
    assert any(p.startswith("draft-weighted score") for p in problems), problems


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
