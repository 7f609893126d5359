"""Residual MLP denoiser net for vector data (toys, latents, dihedral angles)."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.nets.embedding import SinusoidalEmbedding, periodic_embed

__all__ = ["MLP"]


class _ResBlock(nn.Module):
    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        r = self.fc1(self.norm(h)) + self.emb(e)
        return h + self.fc2(self.act(r))


@register_module
class MLP(nn.Module):
    """``forward(x_in, c_noise) -> F`` with ``x_in`` of shape ``[B, *shape]`` (flattened to ``in_dim`` features).

    Args:
        in_dim: number of features per sample (``prod(shape)``); an int, or a shape list like ``[1, 8, 8]``.
        hidden: width of the residual blocks.
        depth: number of residual blocks (each: LayerNorm, Linear + noise embedding, SiLU, Linear).
        emb_dim: size of the sinusoidal embedding of ``c_noise`` (EDM: ``ln(sigma)/4``; flows: time ``t``).
        periodic: embed the input as ``(sin x, cos x)`` (for angles). The net then wants the RAW, unscaled ``x``,
            which :class:`latentgeo.diffusion.EDMDenoiser` detects through the ``raw_input`` attribute.
        max_freq: highest embedding frequency.

    Output has the shape of ``x_in``. The last layer is zero-initialised so that a fresh EDM denoiser starts at
    ``D = c_skip x`` (the Gaussian-prior denoiser), which speeds up early training.
    """

    def __init__(self, in_dim: Union[int, Sequence[int]], hidden: int = 256, depth: int = 4, emb_dim: int = 64,
                 periodic: bool = False, max_freq: float = 1000.0):
        super().__init__()
        n = int(in_dim) if isinstance(in_dim, int) else int(math.prod(in_dim))
        self.in_dim = n
        self.periodic = bool(periodic)
        self.raw_input = self.periodic
        self.embed = SinusoidalEmbedding(emb_dim, max_freq)
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(2 * n if self.periodic else n, hidden)
        self.blocks = nn.ModuleList([_ResBlock(hidden, hidden) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        shape = x_in.shape
        h = x_in.reshape(shape[0], -1)
        if h.shape[1] != self.in_dim:
            raise ValueError(f"MLP built for {self.in_dim} features got input of shape {tuple(shape)}")
        if self.periodic:
            h = periodic_embed(h)
        c = c_noise.reshape(-1).expand(shape[0]) if c_noise.numel() == 1 else c_noise.reshape(-1)
        e = self.emb_mlp(self.embed(c).to(h.dtype))
        h = self.inp(h)
        for blk in self.blocks:
            h = blk(h, e)
        return self.out(torch.nn.functional.silu(self.out_norm(h))).reshape(shape)
