"""Encoder / decoder architectures shared by GPE and every baseline (same nets for all methods).

- Vectors ``[D]``: fully connected nets (the paper's 4-layer MLP for the Gaussian-mixture experiment).
- Images ``[C, H, W]`` (8, 28 or 32 px): strided conv encoder (k5 s2 blocks with BatchNorm and LeakyReLU 0.2, then a
  linear head) and one of two decoders (``Decoder(..., decoder=...)``):
  ``"wide"`` (default, :class:`WideConvDecoderNet`): a hidden fully connected layer, then nearest-neighbour
  upsampling + 3x3 conv blocks with GroupNorm/SiLU; ``"lean"`` (:class:`ConvDecoderNet`): linear -> ``H/4`` map ->
  two k4 s2 transposed convs -> 3x3 conv; ``"mlp"`` (:class:`MLPDecoderNet`, 2 hidden SiLU layers of 1024):
  fully connected, ~0.02 CPU s/iteration. The conv ones are small next to the authors' decoder (~0.39 s/iteration
  on a 2-core CPU, REFERENCE.md section 1). On Fashion-MNIST 32x32 with latent 30 (benchmarks/gpe_vs_vae.py) the
  wide one costs ~0.09-0.1 CPU s/iteration (~1.9x the lean one). With Adam lr 2e-3 cosine-annealed over 480 CPU s
  it reaches validation MSE 0.0256 on a frozen GPE encoder (held-out GME 0.005) and 0.0283 on a frozen VAE encoder;
  the MLP one matches it per CPU second for ~60 s but ends worse over 240 s (0.0273 vs 0.0260) and is less stable
  at high learning rates (results/gpe_vs_vae_search_10min.json).

:class:`Encoder` wraps a body and stores the latent normalisation ``z = C (T(x) - m)`` as buffers, so it travels
with the checkpoint. :class:`Decoder` takes NORMALISED latents; for jointly trained baselines (whose decoder learnt
on raw ``T(x)``) the inverse normalisation is folded into the decoder's input buffers.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.errors import LatentgeoError

__all__ = ["Encoder", "Decoder", "MLPEncoderNet", "ConvEncoderNet", "MLPDecoderNet", "ConvDecoderNet",
           "WideConvDecoderNet", "DECODERS", "normalise_shape"]

DECODERS = ("wide", "lean", "mlp")

Shape = Union[int, Sequence[int]]


def normalise_shape(shape: Shape) -> List[int]:
    """``784`` or ``[1, 28, 28]`` -> list of positive ints; raises LatentgeoError otherwise."""
    if isinstance(shape, int):
        shape = [shape]
    try:
        out = [int(s) for s in shape]
    except (TypeError, ValueError):
        raise LatentgeoError(f"data shape {shape!r} is not a list of integers; pass e.g. [1, 28, 28] or 784") from None
    if not out or any(s <= 0 for s in out) or len(out) not in (1, 3):
        raise LatentgeoError(f"data shape {out} is not supported; use a vector [D] or an image [C, H, W]")
    return out


def _resolve_arch(arch: str, shape: List[int]) -> str:
    if arch == "auto":
        return "conv" if len(shape) == 3 and shape[1] >= 8 and shape[1] % 4 == 0 and shape[2] % 4 == 0 else "mlp"
    if arch not in ("mlp", "conv"):
        raise LatentgeoError(f"unknown architecture '{arch}'; choose one of: auto, mlp, conv")
    if arch == "conv" and (len(shape) != 3 or shape[1] % 4 or shape[2] % 4 or shape[1] < 8):
        raise LatentgeoError(f"the conv nets need images [C, H, W] with H, W multiples of 4 and >= 8, got {shape}; "
                             "pad the images (e.g. 28 -> 32) or use --arch mlp")
    return arch


@register_module
class MLPEncoderNet(nn.Module):
    """``[B, D] -> [B, out_dim]``: ``depth`` hidden layers of ``width`` units with LeakyReLU(0.2)."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 128, depth: int = 3):
        super().__init__()
        layers: List[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
            d = width
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


@register_module
class ConvEncoderNet(nn.Module):
    """``[B, C, H, W] -> [B, out_dim]``: k5 s2 conv blocks (BatchNorm, LeakyReLU 0.2) until the map is <= 4 px,
    channels ``width * 2^k``, then a linear head."""

    def __init__(self, in_shape: List[int], out_dim: int, width: int = 32):
        super().__init__()
        c, h, w = in_shape
        layers: List[nn.Module] = []
        ch = width
        while True:
            layers += [nn.Conv2d(c, ch, 5, 2, 2), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2)]
            h, w, c = (h + 1) // 2, (w + 1) // 2, ch
            if h <= 4:
                break
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@register_module
class MLPDecoderNet(nn.Module):
    """``[B, d] -> [B, *out_shape]`` fully connected: ``depth`` hidden layers of ``width`` units (LeakyReLU 0.2 or
    SiLU), then a linear layer to all outputs. Also the ``"mlp"`` image decoder (width 1024, depth 2, SiLU)."""

    def __init__(self, latent_dim: int, out_shape: List[int], width: int = 128, depth: int = 3, act: str = "leaky"):
        super().__init__()
        if act not in ("leaky", "silu"):
            raise LatentgeoError(f"unknown activation '{act}'; choose leaky or silu")
        self.out_shape = list(out_shape)
        layers: List[nn.Module] = []
        d = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LeakyReLU(0.2) if act == "leaky" else nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, math.prod(out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[0], *self.out_shape)


@register_module
class ConvDecoderNet(nn.Module):
    """``[B, d] -> [B, C, H, W]``: linear to a ``4*width x H/4 x W/4`` map, two k4 s2 transposed convs
    (BatchNorm, ReLU) halving the channels, then a 3x3 conv to ``C`` channels (linear output)."""

    def __init__(self, latent_dim: int, out_shape: List[int], width: int = 16):
        super().__init__()
        c, h, w = out_shape
        self.c0, self.h0, self.w0 = 4 * width, h // 4, w // 4
        self.fc = nn.Linear(latent_dim, self.c0 * self.h0 * self.w0)
        self.up = nn.Sequential(
            nn.BatchNorm2d(self.c0), nn.ReLU(),
            nn.ConvTranspose2d(self.c0, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, c, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).reshape(z.shape[0], self.c0, self.h0, self.w0))


def _groups(c: int) -> int:
    """GroupNorm groups: 8 when they divide ``c``, else the largest divisor of ``c`` not above 8."""
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


@register_module
class WideConvDecoderNet(nn.Module):
    """``[B, d] -> [B, C, H, W]``: ``Linear(d, hidden)`` + SiLU, ``Linear(hidden, 2*width x H/4 x W/4)``, then
    twice (nearest x2 upsampling, 3x3 conv, GroupNorm, SiLU) with ``2*width -> width -> width/2`` channels, then a
    3x3 conv to ``C`` channels (linear output).

    Why: more capacity where it is cheap (the hidden fully connected layer is one GEMM) and upsample+conv blocks,
    which avoid the checkerboard artefacts of transposed convs. GroupNorm keeps the decoder independent of the
    batch composition.
    """

    def __init__(self, latent_dim: int, out_shape: List[int], width: int = 32, hidden: int = 512):
        super().__init__()
        c, h, w = out_shape
        c0, c1, c2 = 2 * width, width, max(1, width // 2)
        self.c0, self.h0, self.w0 = c0, h // 4, w // 4
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, c0 * self.h0 * self.w0))
        self.up = nn.Sequential(
            nn.GroupNorm(_groups(c0), c0), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c0, c1, 3, 1, 1), nn.GroupNorm(_groups(c1), c1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c2, 3, 1, 1), nn.GroupNorm(_groups(c2), c2),
            nn.SiLU(),
            nn.Conv2d(c2, c, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).reshape(z.shape[0], self.c0, self.h0, self.w0))


@register_module
class Encoder(nn.Module):
    """Encoder ``T`` with its latent normalisation: ``forward(x) = scale * (T(x) - shift)``.

    Args:
        in_shape: data shape without the batch axis (``[D]`` or ``[C, H, W]``).
        latent_dim: ``d`` (must not exceed the data dimension).
        arch: ``auto`` (conv for images with sides multiple of 4, else MLP), ``mlp`` or ``conv``.
        width: channel/unit width (default 32 for conv, 128 for MLP).
        variational: the body outputs a mean and a log-variance (VAE); ``T(x)`` is then the mean.
    Buffers ``shift`` [d] (``m``) and ``scale`` [] (``C``) start at 0 and 1 (no normalisation) until
    :meth:`fit_normalisation` is called.
    """

    def __init__(self, in_shape: Shape, latent_dim: int = 30, arch: str = "auto", width: int = 0,
                 variational: bool = False):
        super().__init__()
        shape = normalise_shape(in_shape)
        if not (isinstance(latent_dim, int) and latent_dim > 0):
            raise LatentgeoError(f"latent dimension must be a positive integer, got {latent_dim!r}; "
                                 "pass e.g. latent_dim=2 (CLI --latent-dim 2)")
        if latent_dim > math.prod(shape):
            raise LatentgeoError(f"latent dimension {latent_dim} is larger than the data dimension "
                                 f"{math.prod(shape)}; choose --latent-dim <= {math.prod(shape)}")
        self.in_shape, self.latent_dim, self.variational = shape, latent_dim, bool(variational)
        self.arch = _resolve_arch(arch, shape)
        out = latent_dim * (2 if variational else 1)
        if self.arch == "conv":
            self.body = ConvEncoderNet(shape, out, width or 32)
        else:
            self.body = MLPEncoderNet(math.prod(shape), out, width or 128)
        self.register_buffer("shift", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(()))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.in_shape):
            if x[0].numel() == math.prod(self.in_shape):
                return x.reshape(x.shape[0], *self.in_shape)
            raise LatentgeoError(f"encoder expects samples of shape {self.in_shape}, got {list(x.shape[1:])}; "
                                 "use the data the encoder was trained on")
        return x

    def mean_logvar(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw ``(mean, logvar)`` ([B, d] each); ``logvar`` is None for a deterministic encoder."""
        h = self.body(self._check(x))
        if self.variational:
            mean, logvar = h.chunk(2, dim=1)
            return mean, logvar.clamp(-30.0, 20.0)
        return h, None

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``T(x)`` (the mean for a VAE), [B, d]."""
        return self.mean_logvar(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``C (T(x) - m)``, [B, d]."""
        return self.scale * (self.raw(x) - self.shift)

    @torch.no_grad()
    def fit_normalisation(self, x: torch.Tensor, batch_size: int = 500) -> Tuple[torch.Tensor, float]:
        """Set ``m = E T(x)`` and ``C = sqrt(d / E|T(x) - m|^2)`` from data ``x`` (eval mode); returns (m, C)."""
        was = self.training
        self.eval()
        dev = self.shift.device
        t = torch.cat([self.raw(x[i:i + batch_size].to(dev)) for i in range(0, x.shape[0], batch_size)], 0).double()
        self.train(was)
        m = t.mean(0)
        var = (t - m).pow(2).sum(1).mean()
        if not torch.isfinite(var) or var <= 0:
            raise LatentgeoError("the encoder maps the data to a single point (zero latent variance); "
                                 "train it longer or check the data")
        c = math.sqrt(self.latent_dim / float(var))
        self.shift.copy_(m.to(self.shift.dtype))
        self.scale.fill_(c)
        return m, c


@register_module
class Decoder(nn.Module):
    """Decoder ``S`` taking NORMALISED latents ``z`` ([B, d]) to data ``[B, *out_shape]``.

    ``forward(z) = net(z / in_scale + in_shift)``; both buffers are identity (1, 0) for a decoder trained on
    normalised latents (GPE) and set to the encoder's ``(C, m)`` for a decoder that learnt on raw ``T(x)``.

    ``decoder`` picks the decoder for images: ``"wide"`` (default, :class:`WideConvDecoderNet`, width 32),
    ``"lean"`` (:class:`ConvDecoderNet`, width 16) or ``"mlp"`` (:class:`MLPDecoderNet`, width 1024, depth 2,
    SiLU); it is ignored by the MLP architecture. Checkpoints written
    before this option existed hold a lean decoder and still load (the state dict tells which one it is).
    """

    def __init__(self, out_shape: Shape, latent_dim: int = 30, arch: str = "auto", width: int = 0,
                 decoder: str = "wide"):
        super().__init__()
        shape = normalise_shape(out_shape)
        if decoder not in DECODERS:
            raise LatentgeoError(f"unknown decoder '{decoder}'; choose one of: {', '.join(DECODERS)}")
        self.out_shape, self.latent_dim, self.decoder = shape, int(latent_dim), decoder
        self.arch = _resolve_arch(arch, shape)
        self._width = width
        if self.arch == "conv":
            self.net = self._conv_net(decoder)
        else:
            self.net = MLPDecoderNet(latent_dim, shape, width or 128)
        self.register_buffer("in_shift", torch.zeros(latent_dim))
        self.register_buffer("in_scale", torch.ones(()))
        self._register_load_state_dict_pre_hook(self._legacy_hook)

    def _conv_net(self, kind: str) -> nn.Module:
        if kind == "mlp":
            return MLPDecoderNet(self.latent_dim, self.out_shape, self._width or 1024, depth=2, act="silu")
        if kind == "lean":
            return ConvDecoderNet(self.latent_dim, self.out_shape, self._width or 16)
        return WideConvDecoderNet(self.latent_dim, self.out_shape, self._width or 32)

    def _legacy_hook(self, state_dict, prefix, *args) -> None:
        # Checkpoints from before the ``decoder`` option recorded no choice and hold a lean net (its ``fc`` is a
        # plain Linear, ``net.fc.weight``); rebuild that net so they load strictly.
        if self.arch == "conv" and self.decoder == "wide" and prefix + "net.fc.weight" in state_dict:
            self.net = self._conv_net("lean")
            self.decoder = "lean"
            self._latentgeo_config = {**getattr(self, "_latentgeo_config", {}), "decoder": "lean"}

    def decode_raw(self, t: torch.Tensor) -> torch.Tensor:
        """Decode an unnormalised ``T(x)``."""
        return self.net(t)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z / self.in_scale + self.in_shift)
