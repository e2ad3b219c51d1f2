"""Logits -> probabilities with temperature / top-k / top-p, and sampling from one uniform.

Conventions shared by every reference and kernel in the project:

* ``temperature == 0`` means greedy: the distribution is a point mass on the argmax
  (lowest index on ties, like ``torch.argmax``).
* top-k keeps every token whose logit is >= the k-th largest logit (ties at the k-th value are
  kept); ``top_k <= 0`` or ``>= V`` turns it off.
* top-p keeps the smallest set of most likely tokens whose mass reaches ``top_p``: a token is
  kept if the mass of the tokens strictly more likely than it is < ``top_p`` (so value ties are
  kept together); ``top_p >= 1`` turns it off.
* Sampling with a uniform ``u`` in [0, 1) returns the first index whose inclusive cumulative
  probability exceeds ``u * total`` (inverse CDF in vocabulary order): one random number per
  draw, so references and kernels can be compared exactly on the same ``u``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    """Per-request sampling settings, tensors [B]."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor

    @classmethod
    def make(cls, batch: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             device="cpu") -> "SamplingParams":
        return cls(torch.full((batch,), float(temperature), device=device),
                   torch.full((batch,), int(top_k), dtype=torch.long, device=device),
                   torch.full((batch,), float(top_p), device=device))

    @property
    def is_greedy(self) -> torch.Tensor:
        return self.temperature <= 0

    def row(self, i: int) -> "SamplingParams":
        return SamplingParams(self.temperature[i:i + 1], self.top_k[i:i + 1], self.top_p[i:i + 1])


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [B, ..., V] -> fp32 probabilities [B, ..., V] under each row's settings.

    On a CPU the sorts that top-k and top-p need are skipped when no row uses them (the result
    is bit-identical: the same operations on the rows that remain); on CUDA the function never
    reads a value back to the host, so it can be captured in a CUDA graph."""
    return _logits_to_probs(logits, params, skip_unused=not logits.is_cuda)


def _logits_to_probs(logits: torch.Tensor, params: SamplingParams,
                     skip_unused: bool) -> torch.Tensor:
    logits = logits.float()
    shape = logits.shape
    b, v = shape[0], shape[-1]
    x = logits.reshape(b, -1, v)
    bcast = (b, 1, 1)
    temp = params.temperature.float().to(x.device).view(bcast)
    greedy = temp <= 0
    scaled = x / torch.where(greedy, torch.ones_like(temp), temp)
    k = params.top_k.to(x.device).view(bcast)
    use_k = (k > 0) & (k < v)
    if not skip_unused or bool(use_k.any()):
        kth = torch.sort(scaled, dim=-1, descending=True).values.gather(
            -1, (k.clamp(1, v) - 1).expand(b, x.shape[1], 1))
        scaled = torch.where(use_k & (scaled < kth), torch.full_like(scaled, -float("inf")),
                             scaled)
    probs = torch.softmax(scaled, dim=-1)
    top_p = params.top_p.float().to(x.device).view(bcast)
    if not skip_unused or bool((top_p < 1).any()):
        # mass of tokens strictly more likely than each token
        sorted_p = torch.sort(probs, dim=-1, descending=True).values
        csum = torch.cumsum(sorted_p, dim=-1)
        # for token with prob q: mass strictly above = csum at the last index with value > q
        above = _mass_strictly_above(probs, sorted_p, csum)
        keep = (above < top_p) | (top_p >= 1)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    probs = probs / probs.sum(-1, keepdim=True)
    onehot = torch.zeros_like(probs).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)
    probs = torch.where(greedy, onehot, probs)
    return probs.reshape(shape)


def _mass_strictly_above(probs, sorted_p, csum):
    # number of sorted values strictly greater than each prob (sorted descending)
    n_above = torch.searchsorted(-sorted_p.contiguous(), -probs.contiguous(), right=False)
    padded = torch.cat([torch.zeros_like(csum[..., :1]), csum], dim=-1)
    return padded.gather(-1, n_above)


def sample_from_probs(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """probs [..., V] (need not be normalized), u [...] in [0, 1) -> int64 index [...]."""
    probs = probs.float()
    csum = torch.cumsum(probs, dim=-1)
    target = u.float()[..., None] * csum[..., -1:]
    idx = (csum <= target).sum(-1)
    # never return a zero-probability index (u*total can reach the total by rounding)
    last_nonzero = probs.shape[-1] - 1 - torch.flip(probs > 0, dims=[-1]).float().argmax(-1)
    return torch.minimum(idx, last_nonzero).long()
