"""Transformers backend: Domino speculative decoding with any HF causal-LM target.

One loop, the end-to-end reference of the project (batch size 1)::

    prefill target (capture hidden states of the drafter's target_layer_ids) -> first token
    repeat: block [bonus, MASK x (K-1)] -> drafter backbone -> Domino rollout (K-1 proposals)
            -> target verifies [bonus, d_0 .. d_{K-2}] in one forward -> accept (greedy, or
            lossless speculative sampling) -> trim the target KV cache to the accepted tokens
            -> append the accepted tokens' target features to the drafter's context cache

Greedy output equals plain greedy decoding of the target token for token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

from ..core.drafter import DominoDrafter, HeadWeights
from ..core.rollout import domino_rollout_ref
from ..core.sampling import SamplingParams, logits_to_probs, sample_from_probs
from ..core.verify import chain_verify_greedy_ref
from ..ops import resolve_impl
from ..ops.domino_head import PreparedDominoHead
from ..core import chain_verify_sample_ref


@dataclass
class GenerateResult:
    tokens: list[int]  # new tokens only (stop token included when one ended generation)
    accept_lens: list[int] = field(default_factory=list)  # per round: accepted drafts + 1
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    total_time_s: float = 0.0

    @property
    def rounds(self) -> int:
        return len(self.accept_lens)

    @property
    def tau(self) -> float:
        """Mean tokens committed per verification round (accepted drafts + the bonus)."""
        return sum(self.accept_lens) / max(1, len(self.accept_lens))

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / max(self.total_time_s, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layer_features(hidden_states: Sequence[torch.Tensor], layer_ids: list[int]) -> torch.Tensor:
    """The drafter's target features: HF ``output_hidden_states`` of ``layer_ids``, concatenated."""
    # hidden_states[0] is the embedding output; hidden_states[i + 1] is the output of layer i
    return torch.cat([hidden_states[i + 1] for i in layer_ids], dim=-1)


def _truncate(tokens: list[int], max_new_tokens: int, stop: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(tokens[:max_new_tokens]):
        if t in stop:
            return tokens[: i + 1], True
    return tokens[:max_new_tokens], len(tokens) >= max_new_tokens


def _params(temperature: float, top_k: int, top_p: float, device) -> SamplingParams | None:
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: must be in (0, 1]")
    if temperature == 0:
        return None
    return SamplingParams.make(1, temperature, top_k, top_p, device=device)


def _pick(logits: torch.Tensor, params: SamplingParams | None, gen) -> int:
    """One token from logits [V] (greedy when params is None)."""
    if params is None:
        return int(logits.argmax())
    u = torch.rand(1, generator=gen, device="cpu").to(logits.device)
    return int(sample_from_probs(logits_to_probs(logits[None], params), u)[0])


@torch.inference_mode()
def target_generate(target, input_ids: torch.Tensor, *, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                    stop_token_ids: Sequence[int] = (), generator=None) -> GenerateResult:
    """Plain autoregressive decoding with a KV cache (the baseline and sampling reference)."""
    device = input_ids.device
    params = _params(temperature, top_k, top_p, device)
    stop = set(stop_token_ids)
    _sync(device)
    t0 = time.perf_counter()
    cache = DynamicCache()
    out = target(input_ids, past_key_values=cache, use_cache=True)
    tokens: list[int] = []
    while True:
        tok = _pick(out.logits[0, -1], params, generator)
        tokens.append(tok)
        if tok in stop or len(tokens) >= max_new_tokens:
            break
        out = target(torch.tensor([[tok]], device=device), past_key_values=cache, use_cache=True)
    _sync(device)
    return GenerateResult(tokens, total_time_s=time.perf_counter() - t0)


def prepare_head(target, drafter: DominoDrafter, *, use_head: bool = True,
                 head_impl: str = "auto"):
    """The drafting head for :func:`domino_generate`: ``None`` for the PyTorch reference rollout
    (``head_impl`` "ref", or "auto" off CUDA), else an ``ops.domino_head.PreparedDominoHead``
    (the fused Triton head, weights and workspace prepared once; "auto" on CUDA). Prepare it
    once and pass it to every call: at Qwen3-8B shape the preparation (the GRU input table
    E_ih [V, 3G]) costs more than a round."""
    device = target.get_input_embeddings().weight.device
    if resolve_impl(head_impl, device) == "ref":
        return None
    return PreparedDominoHead(target.get_output_embeddings().weight,
                              target.get_input_embeddings().weight,
                              drafter.head_weights() if use_head else None,
                              block_size=drafter.config.resolved_block_size)


@torch.inference_mode()
def domino_generate(target, drafter: DominoDrafter, input_ids: torch.Tensor, *,
                    max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                    top_p: float = 1.0, stop_token_ids: Sequence[int] = (), generator=None,
                    use_head: bool = True, head=None,
                    verify_width: int | None = None,
                    draft_sampling: bool = True) -> GenerateResult:
    """Speculative decoding of one prompt ``input_ids [1, T]`` with a Domino/DFlash drafter.

    Greedy when ``temperature == 0``; otherwise lossless speculative sampling (drafts sampled
    from the head's distribution q, accepted with min(1, p/q), residual resampling). Uniforms
    come from ``generator`` (a CPU ``torch.Generator``) so runs are reproducible.
    ``use_head=False`` drafts with the base logits only (the plain DFlash ablation).
    ``head``: a :func:`prepare_head` result (the fused Triton head; made with the same
    ``use_head``), or None for the PyTorch reference rollout.
    ``verify_width``: drafted tokens the target verifies per round (1 .. K-1, default K-1). The
    drafter always drafts its whole block; a narrower verify is cheaper where a many-token
    forward is compute-bound (a CPU) and loses little when acceptance rarely reaches the end.
    ``draft_sampling=False`` (a diagnostic): at temperature > 0 the drafts are the head's
    argmax, verified as point masses (accepted with probability p(x), residual p without x),
    which is what the SGLang server does today; output stays lossless, tau is lower.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: expected shape [1, T], got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    cfg = drafter.config
    device = input_ids.device
    params = _params(temperature, top_k, top_p, device)
    draft_params = params if draft_sampling else None  # None: argmax drafts (point masses)
    stop = set(stop_token_ids)
    k = cfg.resolved_block_size
    if cfg.mask_token_id is None:
        raise ValueError("dflash_config.mask_token_id: required by the Transformers backend")
    w = k - 1 if verify_width is None else int(verify_width)
    if not 1 <= w <= k - 1:
        raise ValueError(f"verify_width={verify_width}: must be in [1, {k - 1}] (block size {k})")
    embed = target.get_input_embeddings().weight
    lm_head = target.get_output_embeddings().weight
    head_weights = drafter.head_weights() if use_head else None
    if head is not None and (head.head is None) != (head_weights is None):
        raise ValueError(f"head: prepared with{'out' if head.head is None else ''} the Domino "
                         f"head, but use_head={use_head}")
    layer_ids = cfg.target_layer_ids
    res = GenerateResult(tokens=[])
    if head is None:  # the reference rollout computes in fp32: cast the weights once, not per step
        ref_lm, ref_embed = lm_head.float(), embed.float()
        ref_head = (None if head_weights is None else
                    HeadWeights(*(t.float() for t in (head_weights.w_ih, head_weights.w_hh,
                                                      head_weights.w1, head_weights.w2))))

    _sync(device)
    t_start = time.perf_counter()
    cache = DynamicCache()
    out = target(input_ids, past_key_values=cache, use_cache=True, output_hidden_states=True)
    n_ctx = input_ids.shape[1]
    ctx = drafter.extend_context(None, layer_features(out.hidden_states, layer_ids),
                                 torch.arange(n_ctx, device=device)[None])
    bonus = _pick(out.logits[0, -1], params, generator)
    emitted = [bonus]
    # the drafter's input is [bonus, MASK x (K-1)] in every round: `draft_in` keeps its masks
    # (only position 0 changes); the verified block [bonus, d_0 .. d_{w-1}] is `block`
    draft_in = torch.full((1, k), cfg.mask_token_id, dtype=torch.long, device=device)
    block = torch.empty(1, w + 1, dtype=torch.long, device=device)
    while True:
        emitted, done = _truncate(emitted, max_new_tokens, stop)
        if done:
            break
        # ---- draft -------------------------------------------------------------------------
        t0 = time.perf_counter()
        draft_in[0, 0] = bonus
        positions = torch.arange(n_ctx, n_ctx + k, device=device)[None]
        hidden = drafter(embed[draft_in], positions, ctx)
        uniforms = None
        if draft_params is not None:
            uniforms = torch.rand(1, k - 1, generator=generator).to(device)
        if head is None:  # only the w proposals the target will verify
            roll = domino_rollout_ref(hidden[:, : w + 1], draft_in[:, 0], ref_lm, ref_embed,
                                      ref_head,
                                      shift_label=cfg.shift_label,
                                      pure_prefix_len=cfg.pure_draft_prefix_len,
                                      sampling=draft_params,
                                      uniforms=None if uniforms is None else uniforms[:, :w])
        else:
            roll = head(hidden, draft_in[:, 0], shift_label=cfg.shift_label,
                        pure_prefix_len=cfg.pure_draft_prefix_len, sampling=draft_params,
                        uniforms=uniforms)
        _sync(device)
        t1 = time.perf_counter()
        # ---- verify ------------------------------------------------------------------------
        block[0, 0] = bonus
        block[0, 1:] = roll.tokens[0, :w]
        out = target(block, past_key_values=cache, use_cache=True, output_hidden_states=True,
                     position_ids=positions[:, : w + 1])
        logits = out.logits  # argmax needs no fp32 copy; logits_to_probs makes its own
        if params is None:
            acc, new_bonus = chain_verify_greedy_ref(block[:, 1:], logits)
        else:
            # coins independent of the uniforms that drew the drafts
            coins = torch.rand(1, w + 1, generator=generator).to(device)
            probs = logits_to_probs(logits, params)
            q = (roll.draft_probs[:, :w] if draft_params is not None else  # point masses
                 torch.nn.functional.one_hot(block[:, 1:], probs.shape[-1]).to(probs.dtype))
            vr = chain_verify_sample_ref(block[:, 1:], block[:, 0], probs, q,
                                         coins[:, 1:], coins[:, 0])
            acc, new_bonus = vr.accept_len, vr.bonus
        a = int(acc[0])
        cache.crop(n_ctx + a + 1)  # keep the bonus and the accepted drafts
        feats = layer_features(out.hidden_states, layer_ids)[:, : a + 1]
        ctx = drafter.extend_context(ctx, feats, positions[:, : a + 1])
        n_ctx += a + 1
        bonus = int(new_bonus[0])
        emitted += block[0, 1:a + 1].tolist() + [bonus]
        res.accept_lens.append(a + 1)
        _sync(device)
        res.draft_time_s += t1 - t0
        res.verify_time_s += time.perf_counter() - t1
    res.tokens = emitted
    res.total_time_s = time.perf_counter() - t_start
    return res
