"""Domino head math on plain tensors: the bias-free GRU cell and the low-rank correction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .drafter import HeadWeights


def gru_cell(x: torch.Tensor, s: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor):
    """One bias-free GRU step (PyTorch gate order r, z, n). x [B, D], s [B, G] -> [B, G]."""
    gi = x.float() @ w_ih.float().t()
    gh = s.float() @ w_hh.float().t()
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * s.float()


def correction(h: torch.Tensor, s: torch.Tensor, w: HeadWeights) -> torch.Tensor:
    """dL = W2 SiLU(W1 [h ; s]) in fp32. h [B, D], s [B, G] -> [B, V]."""
    a = torch.cat([h.float(), s.float()], dim=-1) @ w.w1.float().t()
    return F.silu(a) @ w.w2.float().t()
