"""A small convolutional U-Net denoiser net for 8/28/32 px images (own code, tiny by default)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.nets.embedding import SinusoidalEmbedding

__all__ = ["UNet"]


def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with the noise embedding added between the convolutions."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.c2(self.drop(F.silu(self.n2(h))))
        return self.skip(x) + h


@register_module
class UNet(nn.Module):
    """``forward(x_in, c_noise) -> F``; ``x_in`` of shape ``[B, C, H, W]``, ``c_noise`` of shape ``[B]``.

    Encoder: per level ``num_blocks`` residual blocks, then a stride-2 conv (odd sizes round up; the decoder
    resizes back to the skip's size, so 7x7 or 28x28 work as well as 32x32). Decoder mirrors it with skip
    concatenation. Default (``base=32``, ``mults=(1, 2)``, one block per level) has ~0.64M parameters; ``base=16`` ~0.16M.

    Args:
        channels: image channels C.
        base: channels at the first level; level i has ``base * mults[i]``.
        mults: channel multipliers, one per resolution level (``len(mults) - 1`` downsamplings).
        num_blocks: residual blocks per level.
        emb_dim: size of the sinusoidal noise embedding.
        dropout: dropout inside residual blocks.
    """

    def __init__(self, channels: int = 1, base: int = 32, mults: Sequence[int] = (1, 2), num_blocks: int = 1,
                 emb_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        mults = list(mults)
        self.channels = channels
        self.embed = SinusoidalEmbedding(emb_dim)
        ed = base * 4
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, ed), nn.SiLU(), nn.Linear(ed, ed))
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        chans = [base]
        ch = base
        for i, m in enumerate(mults):
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(_ResBlock(ch, base * m, ed, dropout))
                ch = base * m
                chans.append(ch)
            self.down.append(blocks)
            if i < len(mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                chans.append(ch)
        self.mid1 = _ResBlock(ch, ch, ed, dropout)
        self.mid2 = _ResBlock(ch, ch, ed, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            blocks = nn.ModuleList()
            for _ in range(num_blocks + 1):
                blocks.append(_ResBlock(ch + chans.pop(), base * m, ed, dropout))
                ch = base * m
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)
        # Zero output layer: a fresh EDM denoiser starts at D = c_skip x.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x_in.ndim != 4 or x_in.shape[1] != self.channels:
            raise ValueError(f"UNet expects [B, {self.channels}, H, W], got {tuple(x_in.shape)}")
        c = c_noise.reshape(-1).expand(x_in.shape[0]) if c_noise.numel() == 1 else c_noise.reshape(-1)
        e = self.emb_mlp(self.embed(c).to(x_in.dtype))
        h = self.inp(x_in)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, e)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid1(h, e), e)
        for j, blocks in enumerate(self.up):
            for blk in blocks:
                s = skips.pop()
                if h.shape[-2:] != s.shape[-2:]:
                    h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
                h = blk(torch.cat([h, s], dim=1), e)
            if j < len(self.upsample):
                s = skips[-1]
                h = self.upsample[j](F.interpolate(h, size=s.shape[-2:], mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
