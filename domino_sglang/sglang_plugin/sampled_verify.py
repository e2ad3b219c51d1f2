"""The project's own sampled chain verification, replacing DFlash's (default on chain servers).

``DominoServeConfig.sampled_verify == "domino"`` (the default; developer switch
``DOMINO_SAMPLED_VERIFY``, parsed in ``options``) makes a Domino chain server verify sampled
requests with :func:`domino_sampled_accept` instead of SGLang 0.5.17's
``compute_dflash_sampling_correct_drafts_and_bonus`` (sgl_kernel top-k/top-p renorm +
``tree_speculative_sampling_target_only``); ``DOMINO_SAMPLED_VERIFY=sglang`` keeps SGLang's.
Why ours is the default:

* SGLang's version ignores ``min_p``, and when its sampling ops fail to import it verifies
  sampled requests greedily (not lossless); ours applies temperature, top-k, top-p and min_p and
  is always available;
* it is the one tested statistically on the H200 (2026-11-29 06:21, reliability_gpu.py: first
  token chi-square p = 0.043 over 1000 samples, PIT of 1400 drafted positions p = 0.41).

Tree servers keep SGLang's tree sampling kernel (the hook is chain-only).

Simulated acceptance (``SGLANG_SIMULATE_ACC_LEN`` > 0, benchmarks only, docs/serve_config.md)
needs nothing here: ``DFlashWorkerV2.forward_batch_generation`` overrides the accept length,
commit lengths, bonus and output tokens in place after this function returns, exactly as after
its own greedy accept (tests/sglang_plugin/test_serve_config.py runs that sequence).

Semantics: by default the drafts are point masses (greedy Domino proposals), so at each position
the draft is accepted with probability p(x) and on rejection the next token is drawn from p with
x removed (``core.verify``); with ``DOMINO_SAMPLED_DRAFTS=1`` (``sampled_draft``) the drafts are
sampled from q and ``draft_probs`` carries q: accepted with min(1, p/q), residual
max(p - q, 0). p is the request's sampling distribution
(``core.sampling.logits_to_probs`` + min-p). Only Domino servers install the hooks (from the
worker factory): a stock DFLASH server in another process is untouched.
"""

from __future__ import annotations

import logging

import torch

from ..core.sampling import SamplingParams, logits_to_probs
from ..ops.chain_verify import chain_verify_sample
from .options import parse_sampled_verify as sampled_verify_choice  # noqa: F401 (re-export)

logger = logging.getLogger(__name__)

ENV = "DOMINO_SAMPLED_VERIFY"
_TARGETS = {
    "compute": "sglang.srt.speculative.dflash_utils.compute_dflash_sampling_correct_drafts_and_bonus",
    "available": "sglang.srt.speculative.dflash_utils.is_dflash_sampling_verify_available",
}


def sampling_params_of(sampling_info, bs: int) -> SamplingParams:
    """The first ``bs`` requests' temperature, top-k and top-p (SGLang's
    ``SamplingBatchInfo``; greedy requests are stored as top_k = 1) as
    :class:`SamplingParams`: the target's distribution here, the drafts' in ``sampled_draft``."""
    return SamplingParams(sampling_info.temperatures.reshape(-1)[:bs].float(),
                          sampling_info.top_ks.reshape(-1)[:bs].long(),
                          sampling_info.top_ps.reshape(-1)[:bs].float())


def target_probs(next_token_logits: torch.Tensor, sampling_info, bs: int,
                 block: int) -> torch.Tensor:
    """[bs * block, V] logits -> [bs, block, V] fp32 probabilities under each request's
    temperature, top-k, top-p and min-p (SGLang stores greedy requests as top_k = 1)."""
    logits = next_token_logits.view(bs, block, -1)
    probs = logits_to_probs(logits, sampling_params_of(sampling_info, bs))
    min_ps = getattr(sampling_info, "min_ps", None)
    if min_ps is not None and getattr(sampling_info, "need_min_p_sampling", True):
        floor = min_ps.reshape(-1, 1, 1).float() * probs.amax(-1, keepdim=True)
        probs = torch.where(probs >= floor, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def domino_sampled_accept(*, candidates: torch.Tensor, next_token_logits: torch.Tensor,
                          sampling_info, uniform_samples: torch.Tensor | None = None,
                          uniform_samples_for_final_sampling: torch.Tensor | None = None,
                          draft_probs: torch.Tensor | None = None,
                          **_sglang_only) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for SGLang's ``compute_dflash_sampling_correct_drafts_and_bonus``.

    candidates [bs, B] (bonus, then the B-1 drafts); next_token_logits [bs * B, V];
    uniform_samples [bs, B] (column j > 0 is the coin of draft j); the final draw uses
    uniform_samples_for_final_sampling [bs]. ``draft_probs`` [bs, B-1, V]: the distributions
    the drafts were sampled from (``DOMINO_SAMPLED_DRAFTS``, ``sampled_draft``): accepted with
    min(1, p/q), residual max(p - q, 0); None: point-mass drafts. Returns (accepted drafts
    [bs], bonus token [bs]). Keyword arguments only SGLang's version uses (thresholds, top-k
    hints) are ignored: this verification is always exact.
    """
    bs, block = candidates.shape
    device = next_token_logits.device
    if uniform_samples is None:
        uniform_samples = torch.rand((bs, block), dtype=torch.float32, device=device)
    if uniform_samples_for_final_sampling is None:
        uniform_samples_for_final_sampling = torch.rand((bs,), dtype=torch.float32,
                                                        device=device)
    probs = target_probs(next_token_logits, sampling_info, bs, block)
    cand = candidates.long()
    if draft_probs is not None:
        if tuple(draft_probs.shape) != (bs, block - 1, probs.shape[-1]):
            raise ValueError(f"draft_probs {tuple(draft_probs.shape)}: expected "
                             f"{(bs, block - 1, probs.shape[-1])} for candidates {(bs, block)}")
        draft_probs = draft_probs.to(device=probs.device, dtype=torch.float32)
    res = chain_verify_sample(cand[:, 1:], cand[:, 0], probs, draft_probs,
                              uniform_samples[:, 1:], uniform_samples_for_final_sampling)
    return res.accept_len.to(device), res.bonus.to(device=device, dtype=torch.int64)


def planted_wrong_residual_accept(*, candidates: torch.Tensor, next_token_logits: torch.Tensor,
                                  sampling_info, uniform_samples: torch.Tensor | None = None,
                                  uniform_samples_for_final_sampling: torch.Tensor | None = None,
                                  draft_probs: torch.Tensor | None = None,
                                  **_sglang_only) -> tuple[torch.Tensor, torch.Tensor]:
    """A deliberately WRONG verifier for power checks (``DOMINO_SAMPLED_VERIFY=
    planted-wrong-residual``): acceptance as in :func:`domino_sampled_accept`, but after a
    rejection the next token is drawn from the wrong distribution. Point-mass drafts: from the
    full target distribution p instead of p with the rejected draft removed, so the rejected
    draft x is emitted with probability p(x) + (1 - p(x)) p(x) instead of p(x). Sampled drafts
    (``draft_probs`` = q): from q instead of the residual max(p - q, 0), so a position emits
    min(p, q) + TV(p, q) q instead of p. (Until session 16 the sampled-draft plant also drew from
    p: min(p, q) + TV p, a bias the PIT test had ~10 % power to catch at the tiny pair's real p
    and q, against ~100 % for this one: ``benchmarks/plant_power_cpu.py``.) A sampled-
    losslessness test must fail on it."""
    bs, block = candidates.shape
    device = next_token_logits.device
    if uniform_samples_for_final_sampling is None:
        uniform_samples_for_final_sampling = torch.rand((bs,), dtype=torch.float32,
                                                        device=device)
    accept, bonus = domino_sampled_accept(
        candidates=candidates, next_token_logits=next_token_logits, sampling_info=sampling_info,
        uniform_samples=uniform_samples,
        uniform_samples_for_final_sampling=uniform_samples_for_final_sampling,
        draft_probs=draft_probs)
    probs = target_probs(next_token_logits, sampling_info, bs, block)
    rows = torch.arange(bs, device=device)
    pos = accept.long().clamp(max=block - 1)
    if draft_probs is None or block < 2:
        wrong = probs[rows, pos]  # p: the rejected draft can come back
    else:  # q of the rejected draft (draft j = accept + 1 has q at index accept)
        wrong = draft_probs.to(device=probs.device, dtype=torch.float32)[
            rows, accept.long().clamp(max=block - 2)]
    cdf = wrong.cumsum(-1)
    u = uniform_samples_for_final_sampling.reshape(-1, 1).float() * cdf[:, -1:]
    drawn = torch.searchsorted(cdf, u).reshape(-1).clamp(max=probs.shape[-1] - 1)
    rejected = accept.long() < block - 1
    return accept, torch.where(rejected, drawn, bonus.long()).to(bonus.dtype)


def _always_available() -> bool:
    return True


def install_sampled_verify_hooks(planted: bool = False) -> None:
    """REPLACE hooks on the two DFlash functions (idempotent), applied at once; ``planted``
    installs :func:`planted_wrong_residual_accept` (power checks only: NOT lossless)."""
    from sglang.srt.speculative import dflash_utils, dflash_worker_v2

    from .hooks import install_hook

    accept_fn = planted_wrong_residual_accept if planted else domino_sampled_accept
    for key, hook in (("compute", accept_fn), ("available", _always_available)):
        install_hook(_TARGETS[key], hook, "replace", apply=True)

    original = getattr(dflash_utils.compute_dflash_sampling_correct_drafts_and_bonus,
                       "__wrapped__", None)
    if original is None or \
            dflash_worker_v2.compute_dflash_sampling_correct_drafts_and_bonus is original:
        raise RuntimeError(f"{ENV}=domino: the hook on {_TARGETS['compute']} was not applied "
                           "to dflash_worker_v2 (see the HookRegistry error above)")
    if planted:
        logger.error("domino: %s=planted-wrong-residual: sampled requests use a DELIBERATELY "
                     "WRONG verifier (power checks only); outputs are NOT lossless", ENV)
    else:
        logger.info("domino: sampled requests are verified by domino_sglang (%s=domino)", ENV)
