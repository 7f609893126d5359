"""Adapter: a user's diffusers ``UNet2DModel`` as a denoiser net ``forward(x_in, c_noise)``."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.errors import LatentgeoError

__all__ = ["DiffusersUNet"]


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

    For a PRETRAINED DDPM/VP model (epsilon prediction over discrete timesteps) use
    :class:`latentgeo.diffusion.VPToVE` instead: it keeps the model's own noise parametrisation.
    """

    def __init__(self, unet: Optional[nn.Module] = None, config: Optional[Dict[str, Any]] = None,
                 time_scale: float = 250.0):
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
        # Record the diffusers config (JSON-able) rather than the module object, so checkpoints can rebuild it.
        cfg = {k: _plain(v) for k, v in dict(unet.config).items() if not k.startswith("_")}
        object.__setattr__(self, "_latentgeo_config", {"unet": None, "config": cfg, "time_scale": self.time_scale})

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = c_noise.reshape(-1).expand(x_in.shape[0]) if c_noise.numel() == 1 else c_noise.reshape(-1)
        return self.unet(x_in, (t * self.time_scale).to(x_in.dtype)).sample
