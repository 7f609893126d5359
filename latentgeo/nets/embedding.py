"""Noise-level and input embeddings shared by the denoiser nets."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalEmbedding", "periodic_embed"]


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal (Fourier) features of a scalar noise condition.

    ``forward(c)`` maps ``c`` of shape ``[B]`` to ``[B, dim]`` = ``[cos(w_k c), sin(w_k c)]`` with frequencies
    ``w_k`` log-spaced in ``[1, max_freq]``. EDM's ``c_noise = ln(sigma)/4`` lies in about ``[-1.6, 1.1]`` over the
    sampling range, so frequencies of order 1..1000 resolve it; flow-matching time ``t`` in ``[0, 1]`` likewise.
    """

    def __init__(self, dim: int = 64, max_freq: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        half = dim // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        c = c.reshape(-1, 1).to(self.freqs.dtype)
        arg = c * self.freqs[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def periodic_embed(x: torch.Tensor) -> torch.Tensor:
    """``[B, n] -> [B, 2n]``: ``(sin x, cos x)``, a 2*pi-periodic embedding for angle coordinates."""
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)
