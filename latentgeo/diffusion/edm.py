"""EDM preconditioning, loss and noise schedule (Karras et al. 2022), implemented from the formulas.

VE convention: ``x = x0 + sigma * n``. A denoiser is ``D(x, sigma) -> E[x0 | x]`` with ``sigma`` of shape ``[B]``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.errors import LatentgeoError, values_readable

__all__ = ["EDMDenoiser", "estimate_sigma_data", "edm_loss", "edm_sigmas", "sample_training_sigmas",
           "as_sigma_batch", "check_sigma", "build_net"]


def check_sigma(sigma: Union[float, torch.Tensor], name: str = "sigma") -> None:
    """Raise unless every noise level is finite and >= 0. Free for Python numbers and CPU tensors; CUDA tensors are
    not checked here (that would be a host sync per call) — the samplers and estimators build their sigmas."""
    if isinstance(sigma, torch.Tensor):
        if sigma.device.type != "cpu" or sigma.numel() == 0 or not values_readable(sigma):
            return
        ok = bool(torch.isfinite(sigma).all()) and bool((sigma >= 0).all())
        bad = sigma
    else:
        try:
            v = float(sigma)
        except (TypeError, ValueError):
            raise LatentgeoError(f"{name} must be a number or a tensor, got {type(sigma).__name__}; "
                                 "pass a float or a tensor of noise levels") from None
        ok = math.isfinite(v) and v >= 0
        bad = v
    if not ok:
        shown = bad if not isinstance(bad, torch.Tensor) else bad.reshape(-1)[:4].tolist()
        raise LatentgeoError(f"{name} must be finite and >= 0 (the noise standard deviation), got {shown}; "
                             "pass noise levels sigma >= 0")


def as_sigma_batch(sigma: Union[float, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Broadcast a float / 0-d / ``[B]`` sigma to a ``[B]`` tensor on ``x``'s device and dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0 or s.numel() == 1:
        s = s.reshape(1).expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise LatentgeoError(f"sigma has shape {tuple(s.shape)} but x has batch size {x.shape[0]}; "
                             "pass one sigma per sample ([B]) or a single float")
    return s


def build_net(name: Any, net_kwargs: Any) -> nn.Module:
    """The network registered as ``name`` (``"mlp"``, ``"unet"``, ``"diffusers_unet"`` or a registered class's
    name), built with ``net_kwargs`` after checking them against its constructor.

    ``name`` and ``net_kwargs`` may come from a file (a checkpoint's config): they are looked up in latentgeo's
    registries only — nothing is imported or called by name — and a class that is not an ``nn.Module`` is refused.
    """
    from latentgeo.checkpoint import registered_class, validate_config
    from latentgeo.nets import NETS

    if not isinstance(name, str):
        raise LatentgeoError(f"net must be a name or an nn.Module, got {type(name).__name__}; pass net='mlp'")
    cls = NETS.get(name) or registered_class(name, "net")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise LatentgeoError(f"net '{name}' is not a network class; use one of {sorted(NETS)}")
    kw = validate_config(cls, {} if net_kwargs is None else net_kwargs, f"net '{name}' ")
    return cls(**kw)


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
            self.net = build_net(net, net_kwargs)
        if not (math.isfinite(float(sigma_data)) and float(sigma_data) > 0):
            raise LatentgeoError(f"sigma_data must be positive and finite, got {sigma_data}; estimate it from the data")
        self.sigma_data = float(sigma_data)

    def precond(self, sigma: torch.Tensor):
        """``(c_skip, c_out, c_in, c_noise)`` for sigma ``[B]``."""
        sd = self.sigma_data
        s2 = sigma ** 2 + sd ** 2
        return sd ** 2 / s2, sigma * sd / s2.sqrt(), 1.0 / s2.sqrt(), sigma.log() / 4

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        check_sigma(sigma)
        s = as_sigma_batch(sigma, x)
        # sigma = 0 is the exact limit D(x, 0) = x (c_skip -> 1, c_out -> 0); the net sees a tiny sigma instead of
        # ln(0) = -inf, whose NaNs would survive the multiplication by c_out = 0.
        zero = s == 0
        s_net = torch.where(zero, torch.full_like(s, 1e-20), s)
        c_skip, c_out, c_in, c_noise = self.precond(s_net)
        c_skip = torch.where(zero, torch.ones_like(c_skip), c_skip)
        c_out = torch.where(zero, torch.zeros_like(c_out), c_out)
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
        raise LatentgeoError(f"number of sampling steps must be >= 1, got {n}; pass steps=1 or more")
    if not (0 < sigma_min < sigma_max):
        raise LatentgeoError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}; "
                             "pass a positive sigma_min below sigma_max, e.g. 0.002 and 80")
    if n == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(n, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        s = (a + i / (n - 1) * (b - a)) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(dtype=dtype, device=device)
