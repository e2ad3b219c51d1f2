"""The head seam (domino_sglang.sglang_plugin.head) against the reference rollout
(domino_sglang.core.domino_rollout_ref, greedy). No SGLang needed; the Triton head runs under
TRITON_INTERPRET=1 on CPU (tests/conftest.py)."""

import logging

import pytest
import torch

from domino_sglang.config import ConfigError
from domino_sglang.core.drafter import HeadWeights
from domino_sglang.sglang_plugin import head as head_mod
from domino_sglang.sglang_plugin.head import (DominoDraftSampler, TritonDominoHead,
                                              TritonHeadImpl, resolve_head_impl, self_check,
                                              torch_domino_head)
from domino_sglang.sglang_plugin.options import (HeadOptions, parse_head_options,
                                                 read_developer_switches)
from domino_sglang.core import domino_rollout_ref

needs_triton = pytest.mark.skipif(
    not torch.cuda.is_available() and __import__("os").environ.get("TRITON_INTERPRET") != "1",
    reason="the Triton head needs CUDA or TRITON_INTERPRET=1")


def _inputs(bs=4, block=6, d=32, g=16, r=8, v=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=gen) * scale  # noqa: E731
    head = HeadWeights(rnd(3 * g, d, scale=0.3), rnd(3 * g, g, scale=0.3),
                       rnd(r, d + g, scale=0.3), rnd(v, r, scale=1.0))
    return (rnd(bs, block, d), torch.randint(0, v, (bs,), generator=gen),
            rnd(v, d, scale=0.3), rnd(v, d), head)


@pytest.mark.parametrize("shift_label", [True, False])
@pytest.mark.parametrize("pure", [0, 1, 3])
@pytest.mark.parametrize("with_head", [True, False])
def test_torch_head_matches_reference(shift_label, pure, with_head):
    hidden, bonus, lm_head, embed, head = _inputs(seed=pure)
    head = head if with_head else None
    ref = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                             pure_prefix_len=pure)
    out = torch.full((hidden.shape[0], hidden.shape[1] - 1), -1, dtype=torch.long)
    torch_domino_head(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                      pure_prefix_len=pure, out=out)
    assert torch.equal(out, ref.tokens)


def test_head_changes_proposals():
    """The correction is not a no-op on these inputs (else the test above proves little)."""
    hidden, bonus, lm_head, embed, head = _inputs()
    a = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=True,
                           pure_prefix_len=0).tokens
    b = domino_rollout_ref(hidden, bonus, lm_head, embed, None, shift_label=True,
                           pure_prefix_len=0).tokens
    assert not torch.equal(a, b)


def test_sampler_flat_layout_and_static_out():
    """The capture-hook contract: hidden [bs*B, D], block input_ids [bs*B] (bonus at ::B),
    proposals in the static out[:bs*(B-1)]; padded rows beyond bs are ignored."""
    hidden, bonus, lm_head, embed, head = _inputs(bs=3, block=5)
    bs, block, d = hidden.shape
    sampler = DominoDraftSampler(lm_head=lm_head, embed=embed, head=head, block_size=block,
                                 shift_label=True, pure_prefix_len=1, max_bs=8)
    out_ptr = sampler.out.data_ptr()
    ids = torch.full((bs, block), 63, dtype=torch.long)
    ids[:, 0] = bonus
    padded_hidden = torch.cat([hidden.reshape(bs * block, d), torch.randn(block, d)])
    padded_ids = torch.cat([ids.flatten(), torch.zeros(block, dtype=torch.long)])
    sampler(padded_hidden[: bs * block], padded_ids[: bs * block])
    ref = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=True,
                             pure_prefix_len=1).tokens
    assert sampler.out.data_ptr() == out_ptr
    assert torch.equal(sampler.out[: bs * (block - 1)].view(bs, block - 1), ref)
    with pytest.raises(RuntimeError, match="max_bs"):
        DominoDraftSampler(lm_head=lm_head, embed=embed, head=head, block_size=block,
                           shift_label=True, pure_prefix_len=1, max_bs=2)(
            hidden.reshape(bs * block, d), ids.flatten())


# ---- the Triton head behind the seam -------------------------------------------------------

def _flat(hidden, bonus, fill=7):
    """The capture-hook layout: hidden [bs*B, D], block ids [bs*B] with the bonus at ::B."""
    bs, block, d = hidden.shape
    ids = torch.full((bs, block), fill, dtype=torch.long)
    ids[:, 0] = bonus
    return hidden.reshape(bs * block, d).clone(), ids.flatten()


def _ptrs(bound: TritonDominoHead):
    return [t.data_ptr() for t in bound.op.buffers.tensors()]


@needs_triton
@pytest.mark.parametrize("bs,block", [(1, 4), (3, 4), (1, 8), (3, 8)])
def test_triton_seam_equals_torch_and_spec_with_replay(bs, block):
    """Bound once (max_bs=4), called like a captured graph: static hidden/ids buffers, proposals
    in the sampler's static out; a second call with new values in the same buffers gives the
    new answer; nothing but out (and the head's own scratch) is written."""
    shift, pure = (True, 1) if block == 4 else (False, 2)
    hidden, bonus, lm_head, embed, head = _inputs(bs=bs, block=block, seed=10 * bs + block)
    snapshot = [t.clone() for t in (lm_head, embed, head.w_ih, head.w_hh, head.w1, head.w2)]
    sampler = DominoDraftSampler(lm_head=lm_head, embed=embed, head=head, block_size=block,
                                 shift_label=shift, pure_prefix_len=pure, max_bs=4,
                                 head_fn=TritonHeadImpl(), impl_name="triton")
    bound = sampler.head_fn
    assert isinstance(bound, TritonDominoHead)
    static_h, static_ids = _flat(hidden, bonus)
    out_ptr, scratch = sampler.out.data_ptr(), _ptrs(bound)
    sampler.out.fill_(-1)
    n = block - 1
    for call in range(2):
        if call == 1:  # replay: new inputs copied into the same static buffers
            hidden, bonus, *_ = _inputs(bs=bs, block=block, seed=99 + bs + block)
            h2, ids2 = _flat(hidden, bonus)
            static_h.copy_(h2)
            static_ids.copy_(ids2)
        h_before, ids_before = static_h.clone(), static_ids.clone()
        sampler(static_h, static_ids)
        got = sampler.out[: bs * n].view(bs, n)
        ref = domino_rollout_ref(hidden, bonus, lm_head, embed, head, shift_label=shift,
                                 pure_prefix_len=pure).tokens
        via_torch = torch.full_like(ref, -1)
        torch_domino_head(hidden, bonus, lm_head, embed, head, shift_label=shift,
                          pure_prefix_len=pure, out=via_torch)
        assert torch.equal(got, ref), (call, got.tolist(), ref.tolist())
        assert torch.equal(via_torch, ref)
        assert torch.equal(sampler.out[bs * n:], torch.full((sampler.out.numel() - bs * n,), -1))
        assert torch.equal(static_h, h_before) and torch.equal(static_ids, ids_before)
        assert sampler.out.data_ptr() == out_ptr and _ptrs(bound) == scratch
    assert all(torch.equal(a, b) for a, b in
               zip(snapshot, (lm_head, embed, head.w_ih, head.w_hh, head.w1, head.w2)))


@needs_triton
def test_triton_seam_plain_dflash_and_eager_overflow():
    """head=None (plain DFlash checkpoint) and a batch above max_bs outside a capture (SGLang's
    eager draft path builds its sampler with max_bs=1): separate overflow buffers, same answer."""
    hidden, bonus, lm_head, embed, head = _inputs(bs=3, block=4, seed=5)
    for h in (None, head):
        sampler = DominoDraftSampler(lm_head=lm_head, embed=embed, head=h, block_size=4,
                                     shift_label=True, pure_prefix_len=0, max_bs=1,
                                     head_fn=TritonHeadImpl(gi_table="none"))
        scratch = _ptrs(sampler.head_fn)
        out = torch.full((3, 3), -1, dtype=torch.long)
        sampler.propose(hidden.reshape(12, -1), bonus, out)
        ref = domino_rollout_ref(hidden, bonus, lm_head, embed, h, shift_label=True,
                                 pure_prefix_len=0).tokens
        assert torch.equal(out, ref)
        assert _ptrs(sampler.head_fn) == scratch  # the capture buffers were not reallocated
        overflow = sampler.head_fn.op._overflow
        assert overflow is not None and overflow.rows == 4


@needs_triton
def test_triton_head_refuses_other_weights():
    hidden, bonus, lm_head, embed, head = _inputs(bs=1, block=4)
    bound = TritonHeadImpl().bind(lm_head=lm_head, embed=embed, head=head, block_size=4,
                                  max_bs=1)
    out = torch.empty(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="bound to other"):
        bound(hidden, bonus, lm_head.clone(), embed, head, shift_label=True, pure_prefix_len=0,
              out=out)
    with pytest.raises(ValueError, match="block"):
        bound(torch.randn(1, 5, 32), bonus, lm_head, embed, head, shift_label=True,
              pure_prefix_len=0, out=torch.empty(1, 4, dtype=torch.long))


@needs_triton
@pytest.mark.parametrize("gi_table", ["fp32", "bf16", "none"])
def test_self_check_passes_for_triton(gi_table):
    dtype = torch.bfloat16 if gi_table == "bf16" else torch.float32
    assert self_check(TritonHeadImpl(gi_table=gi_table), "cpu", dtype) is None


@pytest.mark.parametrize("variant", ["auto", "default", "wide", "fused"])
def test_self_check_passes_for_every_variant(variant):
    """The check runs batch 3 and batch 1 (auto: wide, then fused), all equal to the spec."""
    assert self_check(TritonHeadImpl(variant=variant), "cpu", torch.float32) is None


def test_auto_variant_choice():
    from domino_sglang.ops.domino_head import pick_variant

    assert [pick_variant("auto", b) for b in (1, 2, 16, 64)] == ["fused", "wide", "wide", "wide"]
    assert pick_variant("default", 1) == "default" and pick_variant("fused", 16) == "fused"
    cpu = torch.device("cpu")  # no programmatic dependent launch off sm_90+ CUDA devices
    assert [pick_variant("auto", b, cpu) for b in (1, 16)] == ["fused", "wide"]


def test_self_check_problem_has_margin():
    """Every greedy step of the check problem has a top-1/top-2 gap far above bf16 rounding of
    the base logits and of the GI table (so the check is deterministic across devices)."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        hidden, bonus, lm_head, embed, head = head_mod._check_problem(dtype)
        for with_head, shift, pure in head_mod._CHECK_CASES:
            lg = domino_rollout_ref(hidden, bonus, lm_head, embed, head if with_head else None,
                                    shift_label=shift, pure_prefix_len=pure).logits
            top = lg.topk(2, dim=-1).values
            assert (top[..., 0] - top[..., 1]).min() > 0.1


def test_self_check_catches_a_wrong_head():
    def wrong(hidden, bonus, lm_head, embed, head, *, shift_label, pure_prefix_len, out):
        out.zero_()

    def no_out(hidden, bonus, lm_head, embed, head, *, shift_label, pure_prefix_len):
        pass

    assert "differ" in self_check(wrong, "cpu", torch.float32)
    assert "TypeError" in self_check(no_out, "cpu", torch.float32)
    assert self_check(torch_domino_head, "cpu", torch.float32) is None


# ---- selection and options -------------------------------------------------------------------

def test_resolve_head_impl_selection(monkeypatch, caplog):
    for var in ("DOMINO_HEAD_IMPL", "DOMINO_HEAD_GI_TABLE", "DOMINO_HEAD_BASE_LOGITS"):
        monkeypatch.delenv(var, raising=False)
    caplog.set_level(logging.INFO, logger=head_mod.__name__)
    assert resolve_head_impl("cpu")[0] == "torch"  # auto on CPU: the PyTorch head
    assert resolve_head_impl("cuda", env={"DOMINO_HEAD_IMPL": "torch"})[0] == "torch"
    assert "Domino head implementation: torch" in caplog.text

    calls = []
    monkeypatch.setattr(head_mod, "self_check",
                        lambda fn, device, dtype: calls.append((device.type, dtype)) or None)
    name, fn = resolve_head_impl("cuda", torch.bfloat16,
                                 env={"DOMINO_HEAD_GI_TABLE": "bf16",
                                      "DOMINO_HEAD_BASE_LOGITS": "model"})
    assert name == "triton" and isinstance(fn, TritonHeadImpl)
    assert (fn.gi_table, fn.base_logits) == ("bf16", "model")
    assert calls == [("cuda", torch.bfloat16)]
    assert "Domino head implementation: triton" in caplog.text

    monkeypatch.setattr(head_mod, "self_check", lambda fn, device, dtype: "boom")
    assert resolve_head_impl("cuda")[0] == "torch"  # auto: failed check -> fallback, warned
    assert "boom" in caplog.text
    with pytest.raises(ValueError, match="DOMINO_HEAD_IMPL=triton.*self-check.*boom"):
        resolve_head_impl("cuda", env={"DOMINO_HEAD_IMPL": "triton"})

    def broken(opts):
        raise ImportError("no triton")

    monkeypatch.setattr(head_mod, "_make_triton", broken)
    assert resolve_head_impl("cuda")[0] == "torch"
    with pytest.raises(ValueError, match="not importable.*no triton"):
        resolve_head_impl("cuda", env={"DOMINO_HEAD_IMPL": "ops"})  # old alias of triton


@needs_triton
def test_resolve_head_impl_triton_forced_runs_real_check():
    """Forced on CPU the real self-check runs through the interpreter (as it does on CUDA)."""
    name, fn = resolve_head_impl("cpu", env={"DOMINO_HEAD_IMPL": "triton"})
    assert name == "triton" and isinstance(fn, TritonHeadImpl)


def test_head_option_parsing():
    assert parse_head_options({}) == HeadOptions("auto", "fp32", "fp32")
    assert parse_head_options({"DOMINO_HEAD_IMPL": " Triton ", "DOMINO_HEAD_GI_TABLE": "NONE",
                               "DOMINO_HEAD_BASE_LOGITS": ""}) == \
        HeadOptions("triton", "none", "fp32")
    assert parse_head_options({"DOMINO_HEAD_IMPL": "ops"}).impl == "triton"
    assert parse_head_options({"DOMINO_HEAD_VARIANT": "Wide"}).variant == "wide"
    for var, bad, allowed in (("DOMINO_HEAD_IMPL", "cuda", "auto, triton, torch"),
                              ("DOMINO_HEAD_VARIANT", "persistent", "auto, default, wide, fused"),
                              ("DOMINO_HEAD_GI_TABLE", "fp16", "fp32, bf16, none"),
                              ("DOMINO_HEAD_BASE_LOGITS", "bf16", "fp32, model")):
        with pytest.raises(ConfigError, match=f"{var}='{bad}': expected one of {allowed}"):
            parse_head_options({var: bad})
        with pytest.raises(ConfigError, match=var):
            read_developer_switches(env={var: bad})
        with pytest.raises(ValueError, match=var):
            resolve_head_impl("cpu", env={var: bad})
    opts = read_developer_switches(env={"DOMINO_HEAD_GI_TABLE": "bf16"}).head
    assert (opts.impl, opts.gi_table, opts.base_logits) == ("auto", "bf16", "fp32")


@needs_triton
def test_bound_heads_share_prepared_weights():
    """The worker binds a graph sampler and an eager one: one GI table between them."""
    hidden, bonus, lm_head, embed, head = _inputs(bs=1, block=4, seed=3)
    impl = TritonHeadImpl()
    a = impl.bind(lm_head=lm_head, embed=embed, head=head, block_size=4, max_bs=2)
    b = TritonHeadImpl().bind(lm_head=lm_head, embed=embed,
                              head=HeadWeights(head.w_ih, head.w_hh, head.w1, head.w2),
                              block_size=4, max_bs=1)
    assert b.op.weights is a.op.weights
    c = TritonHeadImpl(gi_table="bf16").bind(lm_head=lm_head, embed=embed, head=head,
                                             block_size=4, max_bs=1)
    assert c.op.weights is not a.op.weights
    assert c.op.weights.gi_table.dtype == torch.bfloat16
