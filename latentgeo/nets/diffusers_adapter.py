"""Adapter: a user's diffusers ``UNet2DModel`` as a denoiser net ``forward(x_in, c_noise)``, and the attention
processor that lets JVPs and double backward run through diffusers attention blocks.

Why a processor: diffusers' default ``AttnProcessor2_0`` calls ``F.scaled_dot_product_attention``, which dispatches
to fused kernels (on CPU ``_scaled_dot_product_flash_attention_for_cpu``) that have no forward-mode derivative and a
backward that cannot be differentiated again; and the attention output's tangent reaches the next GroupNorm with
strides for which torch's GroupNorm forward-mode formula fails ("view size is not compatible"). :class:`MathAttnProcessor`
is the same processor run with the math SDPA decomposition and a contiguous output, so forward mode
(``torch.func.jvp``, a JVP of a JVP) and double backward both work, with the same values up to float rounding.
:func:`use_math_attention` installs it on every diffusers attention module of a model; :class:`DiffusersUNet` does so
when it wraps a model (``math_attention=False`` keeps the fused kernels). Models wrapped elsewhere (a VAE passed as an
encoder) still work without it: :mod:`latentgeo.autodiff` falls back to reverse-mode JVPs, at a higher cost.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.errors import LatentgeoError

__all__ = ["DiffusersUNet", "MathAttnProcessor", "use_math_attention"]

# processors whose computation MathAttnProcessor reproduces exactly (the default SDPA one and the classic one);
# anything else (LoRA / IP-adapter processors with weights, custom ones) is left in place
_PLAIN_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor", "XFormersAttnProcessor", "AttnProcessorNPU",
                     "SlicedAttnProcessor")


class MathAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` run with the math SDPA backend, returning a contiguous output (tangent
    included): pure differentiable ops, so forward-mode AD and double backward go through it. Same values as the
    default processor up to float rounding."""

    def __init__(self):
        self._inner = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        # the explicit signature matters: diffusers passes only the keyword arguments a processor declares
        if self._inner is None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            self._inner = AttnProcessor2_0()
        from latentgeo.autodiff import math_attention

        with math_attention():
            out = self._inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        # forward AD keeps the tangent's own strides, and GroupNorm's tangent formula needs them contiguous
        return out.clone(memory_format=torch.contiguous_format)


def use_math_attention(model: nn.Module) -> int:
    """Install :class:`MathAttnProcessor` on every diffusers attention module of ``model`` (in place) whose processor
    is a plain one (``AttnProcessor2_0``, ``AttnProcessor``, xformers, sliced); others are kept. Returns how many were
    switched. Values are unchanged up to float rounding; attention then materialises its score matrix (memory grows
    with the square of the token count, as the classic processor's does)."""
    if not isinstance(model, nn.Module):
        raise LatentgeoError(f"use_math_attention needs a torch module, got {type(model).__name__}; "
                             "pass the diffusers model (an nn.Module) itself")
    n = 0
    for m in model.modules():
        proc = getattr(m, "processor", None)
        if proc is None or not callable(getattr(m, "set_processor", None)):
            continue
        if isinstance(proc, MathAttnProcessor):
            continue
        if type(proc).__name__ in _PLAIN_PROCESSORS:
            m.set_processor(MathAttnProcessor())
            n += 1
    return n


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(u) for u in v]
    if isinstance(v, dict):
        return {k: _plain(u) for k, u in v.items()}
    return v


@register_module
class DiffusersUNet(nn.Module):
    """Wrap ``diffusers.UNet2DModel`` so that it can be the ``net`` of :class:`latentgeo.diffusion.EDMDenoiser`.

    ``DiffusersUNet(unet)`` wraps an existing model (its weights are kept); ``DiffusersUNet(config=dict)`` builds a
    fresh one (this is what a checkpoint stores, so ``latentgeo.load`` can rebuild it). The EDM noise condition
    ``c_noise = ln(sigma)/4`` is passed as the (float) timestep times ``time_scale``, because diffusers' sinusoidal
    timestep embedding is designed for timesteps in ``[0, 1000]``.

    ``math_attention=True`` (default) switches the model's attention blocks to :class:`MathAttnProcessor` in place
    (see the module docstring), so JVP-based estimators run in forward mode through them.

    For a PRETRAINED DDPM/VP model (epsilon prediction over discrete timesteps) use
    :class:`latentgeo.diffusion.VPToVE` instead: it keeps the model's own noise parametrisation.
    """

    def __init__(self, unet: Optional[nn.Module] = None, config: Optional[Dict[str, Any]] = None,
                 time_scale: float = 250.0, math_attention: bool = True):
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise LatentgeoError("DiffusersUNet needs diffusers; install it with `pip install latentgeo[interop]`") from exc
        if unet is None:
            if config is None:
                raise LatentgeoError("DiffusersUNet needs a UNet2DModel or its config; pass unet= or config=")
            unet = UNet2DModel(**config)
        elif not isinstance(unet, UNet2DModel):
            raise LatentgeoError(f"DiffusersUNet wraps a diffusers UNet2DModel, got {type(unet).__name__}; "
                                 "wrap other nets directly in EDMDenoiser")
        self.unet = unet
        self.time_scale = float(time_scale)
        self.math_attention = bool(math_attention)
        if self.math_attention:
            use_math_attention(unet)
        # Record the diffusers config (JSON-able) rather than the module object, so checkpoints can rebuild it.
        cfg = {k: _plain(v) for k, v in dict(unet.config).items() if not k.startswith("_")}
        object.__setattr__(self, "_latentgeo_config", {"unet": None, "config": cfg, "time_scale": self.time_scale,
                                                      "math_attention": self.math_attention})

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = c_noise.reshape(-1).expand(x_in.shape[0]) if c_noise.numel() == 1 else c_noise.reshape(-1)
        return self.unet(x_in, (t * self.time_scale).to(x_in.dtype)).sample
