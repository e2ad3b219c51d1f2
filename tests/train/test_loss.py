"""Training objective: masks, anchors, schedules, and the training logits equal the inference
rollout (label alignment, teacher-forced GRU, pure-draft prefix)."""

import math

import pytest
import torch

from domino_sglang.core.rollout import domino_rollout_ref
from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target
from domino_sglang.train.loss import (block_attention_mask, block_logits, curriculum_lambda,
                                      decay_weights, lr_at, progress, sample_anchors)


def test_block_mask_structure():
    anchors = torch.tensor([[2, 5]])
    m = block_attention_mask(anchors, context_len=8, block_size=3)[0, 0]
    assert m.shape == (6, 8 + 6)
    # block 0 (anchor 2): context positions 0, 1 only; its own 3 block slots only
    for q in range(3):
        assert m[q, :8].tolist() == [True, True] + [False] * 6
        assert m[q, 8:].tolist() == [True] * 3 + [False] * 3
    for q in range(3, 6):  # block 1 (anchor 5): context < 5
        assert m[q, :8].tolist() == [True] * 5 + [False] * 3
        assert m[q, 8:].tolist() == [False] * 3 + [True] * 3


def test_sample_anchors_valid():
    g = torch.Generator().manual_seed(0)
    lm = torch.zeros(3, 20, dtype=torch.bool)
    lm[0, 10:20] = True
    lm[1, 5:8] = True
    lens = torch.tensor([20, 12, 20])
    anchors, ok = sample_anchors(lm, lens, 4, g)
    for b in range(3):
        for a, v in zip(anchors[b].tolist(), ok[b].tolist()):
            if v:
                assert a + 1 < lens[b] and lm[b, a + 1]
    assert ok[0].all()  # 9 valid anchors (9..18) >= 4
    assert ok[1].sum() == 3  # only 4, 5, 6
    assert not ok[2].any()  # no labels at all
    assert len(set(anchors[0].tolist())) == 4  # without replacement


def test_schedules():
    assert curriculum_lambda(0.0, 0.5) == 1.0
    assert curriculum_lambda(0.25, 0.5) == pytest.approx(0.5)
    assert curriculum_lambda(0.5, 0.5) == 0.0 and curriculum_lambda(0.9, 0.5) == 0.0
    assert curriculum_lambda(0.0, 0.5, enabled=False) == 0.0
    assert progress(10, 100, 50.0, 100.0) == pytest.approx(0.5)  # time budget dominates
    assert progress(80, 100, 50.0, 100.0) == pytest.approx(0.8)
    assert progress(10, 100, 500.0, None) == pytest.approx(0.1)
    w = decay_weights(15, 7.0)
    assert w[0] == 1.0 and w[7].item() == pytest.approx(math.exp(-1.0))
    assert lr_at(1.0, 1e-3, 0.1, 0.1) == pytest.approx(1e-4)
    assert lr_at(0.05, 1e-3, 0.1, 0.1) == pytest.approx(5e-4)


@pytest.mark.parametrize("domino", [True, False])
def test_training_logits_equal_rollout(domino):
    """(plain DFlash here uses the public shift_label=False.) For a sequence that continues with the rollout's own greedy proposals, the teacher-forced
    training logits of the block at anchor a equal the inference rollout's logits."""
    target = build_tiny_target(seed=0)
    drafter = build_tiny_drafter(target, seed=1, head_scale=30.0, domino=domino, block_size=6,
                                 shift_label=True).float()
    cfg = drafter.config
    k, a = cfg.resolved_block_size, 7
    prefix = torch.randint(4, 120, (1, a + 1))
    emb = target.get_input_embeddings().weight
    head_w = target.get_output_embeddings().weight
    with torch.no_grad():
        hs = target(prefix, output_hidden_states=True).hidden_states
        feats = torch.cat([hs[i + 1] for i in cfg.target_layer_ids], dim=-1)
        # inference: context = features of positions < a, block = [x_a, MASK...] at a..a+K-1
        cache = drafter.extend_context(None, feats[:, :a], torch.arange(a)[None])
        block = torch.full((1, k), cfg.mask_token_id)
        block[0, 0] = prefix[0, a]
        hidden = drafter(emb[block], torch.arange(a, a + k)[None], cache)
        roll = domino_rollout_ref(hidden, prefix[:, a], head_w, emb, drafter.head_weights(),
                                  shift_label=cfg.shift_label,
                                  pure_prefix_len=cfg.pure_draft_prefix_len)
        seq = torch.cat([prefix, roll.tokens], dim=1)  # x_{a+1..} = the proposals
        length = seq.shape[1]
        hs = target(seq, output_hidden_states=True).hidden_states
        feats = torch.cat([hs[i + 1] for i in cfg.target_layer_ids], dim=-1)
        # a second, unrelated block in the same row must not change the first one
        anchors = torch.tensor([[2, a]])
        out = block_logits(drafter, emb, head_w, seq, torch.ones_like(seq, dtype=torch.bool),
                           torch.tensor([length]), feats, anchors,
                           torch.tensor([[True, True]]))
    got = out.final if domino else out.base
    assert (out.final is None) == (not domino)
    torch.testing.assert_close(got[0, 1], roll.logits[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(out.labels[0, 1], roll.tokens[0])
    if domino:  # the head matters here (else the check above is vacuous for the head)
        assert (out.final[0, 1, 1:] - out.base[0, 1, 1:]).abs().max() > 1e-2
        torch.testing.assert_close(out.final[0, 1, 0], out.base[0, 1, 0])  # pure prefix


def test_acceptance_metrics_count_leading_hits():
    """Per-position accuracy and 1 + the mean leading run of correct greedy proposals."""
    from domino_sglang.train.loss import acceptance_metrics

    labels = torch.tensor([[[1, 2, 3], [1, 2, 3], [0, 0, 0]]])  # [B=1, N=3 blocks, K-1=3]
    mask = torch.tensor([[[True, True, True], [True, True, False], [False, False, False]]])
    pred = torch.tensor([[[1, 2, 0], [1, 0, 3], [0, 0, 0]]])  # runs 2 and 1; block 3 unlabelled
    logits = torch.nn.functional.one_hot(pred, 4).float()
    acc, tau = acceptance_metrics(logits, labels, mask)
    assert acc.tolist() == [1.0, 0.5, 0.0]
    assert float(tau) == 1.0 + (2 + 1) / 2
