"""EDM preconditioning, loss and noise schedule (Karras et al. 2022), implemented from the formulas.

VE convention: ``x = x0 + sigma * n``. A denoiser is ``D(x, sigma) -> E[x0 | x]`` with ``sigma`` of shape ``[B]``.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from latentgeo.checkpoint import module_config, register_module
from latentgeo.errors import LatentgeoError

__all__ = ["EDMDenoiser", "estimate_sigma_data", "edm_loss", "edm_sigmas", "sample_training_sigmas",
           "as_sigma_batch"]


def as_sigma_batch(sigma: Union[float, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Broadcast a float / 0-d / ``[B]`` sigma to a ``[B]`` tensor on ``x``'s device and dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0 or s.numel() == 1:
        s = s.reshape(1).expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise LatentgeoError(f"sigma has shape {tuple(s.shape)} but x has batch size {x.shape[0]}; "
                             "pass one sigma per sample ([B]) or a single float")
    return s


def _resolve_net_class(name: str) -> type:
    from latentgeo.nets import NETS

    if name in NETS:
        return NETS[name]
    if "." in name:
        mod, _, qual = name.rpartition(".")
        try:
            obj = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
            return obj
        except (ImportError, AttributeError):
            pass
    raise LatentgeoError(f"unknown net '{name}'; use one of {sorted(NETS)} or a registered class's dotted name")


@register_module
class EDMDenoiser(nn.Module):
    """EDM-preconditioned denoiser ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.

    With ``sd = sigma_data``: ``c_skip = sd^2/(s^2+sd^2)``, ``c_out = s sd/sqrt(s^2+sd^2)``,
    ``c_in = 1/sqrt(s^2+sd^2)``, ``c_noise = ln(s)/4``.

    Args:
        net: the network F, either an ``nn.Module`` (``forward(x_in, c_noise)``; registered classes can be saved),
            or a name (``"mlp"``, ``"unet"``, ``"diffusers_unet"`` or a registered class's dotted path) built with
            ``net_kwargs``.
        sigma_data: data standard deviation (estimate it with :func:`estimate_sigma_data`, never assume 0.5).
        net_kwargs: constructor arguments when ``net`` is a name.

    ``forward(x, sigma)``: ``x`` ``[B, ...]`` in any float dtype, ``sigma`` ``[B]`` (or a float); preconditioning runs
    in ``x``'s dtype (so float64 sampling works), the net in its own dtype. Returns ``E[x0|x]`` shaped like ``x``.
    A net with attribute ``raw_input = True`` (periodic MLP) gets the unscaled ``x`` instead of ``c_in x``.
    """

    def __init__(self, net: Union[str, nn.Module] = "mlp", sigma_data: float = 0.5,
                 net_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        if isinstance(net, nn.Module):
            if net_kwargs:
                raise LatentgeoError("net_kwargs are only used when net is a name; drop them or pass net='mlp'")
            self.net = net
            # Record the net as (class path, constructor args) so a checkpoint is JSON and rebuildable.
            cls = getattr(net, "_latentgeo_class", None)
            cfg = getattr(net, "_latentgeo_config", None)
            object.__setattr__(self, "_latentgeo_config", {
                "net": cls or f"{type(net).__module__}.{type(net).__qualname__}",
                "sigma_data": float(sigma_data), "net_kwargs": dict(cfg) if cfg is not None else None})
        else:
            self.net = _resolve_net_class(str(net))(**(net_kwargs or {}))
        if not (math.isfinite(float(sigma_data)) and float(sigma_data) > 0):
            raise LatentgeoError(f"sigma_data must be positive and finite, got {sigma_data}; estimate it from the data")
        self.sigma_data = float(sigma_data)

    def precond(self, sigma: torch.Tensor):
        """``(c_skip, c_out, c_in, c_noise)`` for sigma ``[B]``."""
        sd = self.sigma_data
        s2 = sigma ** 2 + sd ** 2
        return sd ** 2 / s2, sigma * sd / s2.sqrt(), 1.0 / s2.sqrt(), sigma.log() / 4

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        s = as_sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = self.precond(s)
        view = (-1,) + (1,) * (x.ndim - 1)
        x_in = x if getattr(self.net, "raw_input", False) else c_in.view(view) * x
        p = next(self.net.parameters(), None)
        ndt = p.dtype if p is not None else x.dtype
        f = self.net(x_in.to(ndt), c_noise.to(ndt)).to(x.dtype)
        return c_skip.view(view) * x + c_out.view(view) * f

    def score(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        """``(D(x, sigma) - x) / sigma^2``."""
        s = as_sigma_batch(sigma, x).view((-1,) + (1,) * (x.ndim - 1))
        return (self(x, sigma) - x) / s ** 2


def estimate_sigma_data(x0: torch.Tensor) -> float:
    """RMS deviation of the data from its mean, per coordinate: ``sqrt(mean((x0 - mean(x0, 0))^2))``.

    This is the scalar sigma_data of EDM (the std of a typical coordinate of the data).
    """
    x0 = torch.as_tensor(x0)
    if x0.shape[0] < 2:
        raise LatentgeoError("need at least 2 samples to estimate sigma_data; pass more data or set sigma_data")
    x = x0.double().reshape(x0.shape[0], -1)
    sd = float((x - x.mean(0)).pow(2).mean().sqrt())
    if not math.isfinite(sd) or sd <= 0:
        raise LatentgeoError("data has zero or non-finite spread, so sigma_data cannot be estimated; check the data")
    return sd


def sample_training_sigmas(n: int, generator: Optional[torch.Generator] = None, p_mean: float = -1.2,
                           p_std: float = 1.2, device=None, dtype=torch.float32) -> torch.Tensor:
    """``ln sigma ~ N(p_mean, p_std^2)``, shape ``[n]``."""
    dev = generator.device if generator is not None else (device or "cpu")
    z = torch.randn(n, generator=generator, device=dev, dtype=dtype)
    return (p_mean + p_std * z).exp().to(device or dev)


def edm_loss(denoiser: nn.Module, x0: torch.Tensor, generator: Optional[torch.Generator] = None,
             p_mean: float = -1.2, p_std: float = 1.2, sigma_data: Optional[float] = None) -> torch.Tensor:
    """EDM training loss: ``mean_B,dims [ w(s) (D(x0 + s n, s) - x0)^2 ]`` with ``w = (s^2+sd^2)/(s sd)^2``.

    ``denoiser`` may be an EDMDenoiser or a wrapper (e.g. a DDP module) around one; ``sigma_data`` defaults to its
    ``sigma_data`` attribute. Noise is drawn from ``generator`` (on the generator's device, then moved to x0's).
    """
    sd = sigma_data if sigma_data is not None else getattr(getattr(denoiser, "module", denoiser), "sigma_data")
    b = x0.shape[0]
    sigma = sample_training_sigmas(b, generator, p_mean, p_std, dtype=x0.dtype).to(x0.device)
    gdev = generator.device if generator is not None else x0.device
    n = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(x0.device)
    view = (-1,) + (1,) * (x0.ndim - 1)
    x = x0 + sigma.view(view) * n
    w = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    err = (denoiser(x, sigma) - x0) ** 2
    return (w.view(view) * err).mean()


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               dtype=torch.float64, device=None) -> torch.Tensor:
    """Karras schedule: ``n`` sigmas from ``sigma_max`` down to ``sigma_min`` (rho-spaced) followed by a final 0.

    Returns a tensor of shape ``[n + 1]``. ``n = 1`` gives ``[sigma_max, 0]``.
    """
    if n < 1:
        raise LatentgeoError(f"number of sampling steps must be >= 1, got {n}")
    if not (0 < sigma_min < sigma_max):
        raise LatentgeoError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(n, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        s = (a + i / (n - 1) * (b - a)) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(dtype=dtype, device=device)
