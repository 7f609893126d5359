"""Samplers and probability-flow ODE encode/decode for VE denoisers ``D(x, sigma)``.

Every sampler has the signature ``sampler(denoiser, x_T, sigmas, *, generator=None, **options) -> x0`` where
``x_T`` is ``sigmas[0] * N(0, I)`` noise of shape ``[B, ...]`` (use :func:`initial_noise`) and ``sigmas`` is a
decreasing 1-D schedule ending in 0 (:func:`latentgeo.diffusion.edm_sigmas`). Computation runs in ``x_T``'s dtype:
pass float64 noise for float64 sampling. Samplers run under ``torch.no_grad()`` unless ``grad=True``.

PF-ODE (VE): ``dx/dsigma = (x - D(x, sigma)) / sigma``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from latentgeo.diffusion.edm import as_sigma_batch, edm_sigmas
from latentgeo.errors import LatentgeoError

__all__ = ["initial_noise", "heun_sample", "euler_sample", "euler_maruyama_sample", "edm_stochastic_sample",
           "pf_ode_encode", "pf_ode_decode", "sample", "SAMPLERS"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def initial_noise(shape, sigma_max: float = 80.0, generator: Optional[torch.Generator] = None,
                  dtype=torch.float32, device=None) -> torch.Tensor:
    """``sigma_max * N(0, I)`` of the given shape ``[B, ...]``."""
    dev = generator.device if generator is not None else (device or "cpu")
    return (sigma_max * torch.randn(tuple(shape), generator=generator, device=dev, dtype=dtype)).to(device or dev)


def _check(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device).reshape(-1)
    if sigmas.numel() < 2:
        raise LatentgeoError("sigmas needs at least 2 entries (start and end); build it with edm_sigmas(n)")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise LatentgeoError("sigmas must be non-increasing for sampling; use edm_sigmas(n) or reverse it")
    return sigmas


def _ctx(grad: bool):
    return contextlib.nullcontext() if grad else torch.no_grad()


def _d(denoiser: Denoiser, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """PF-ODE slope ``(x - D)/s`` at scalar sigma ``s``."""
    return (x - denoiser(x, as_sigma_batch(s, x))) / s


def _ode(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, second_order: bool) -> torch.Tensor:
    # Generic Heun/Euler over any monotone schedule; a step into sigma = 0 is a plain Euler step (x -> D(x)),
    # because the slope is undefined at 0.
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        if s == s_next:
            continue
        d = _d(denoiser, x, s)
        x_next = x + (s_next - s) * d
        if second_order and s_next > 0:
            d2 = _d(denoiser, x_next, s_next)
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return x


def heun_sample(denoiser: Denoiser, x_T: torch.Tensor, sigmas: torch.Tensor, *,
                generator: Optional[torch.Generator] = None, grad: bool = False) -> torch.Tensor:
    """Deterministic 2nd-order Heun integration of the PF-ODE (EDM Algorithm 1); ``2 len(sigmas) - 3`` calls."""
    sigmas = _check(x_T, sigmas)
    with _ctx(grad):
        return _ode(denoiser, x_T, sigmas, True)


def euler_sample(denoiser: Denoiser, x_T: torch.Tensor, sigmas: torch.Tensor, *,
                 generator: Optional[torch.Generator] = None, grad: bool = False) -> torch.Tensor:
    """First-order Euler integration of the PF-ODE."""
    sigmas = _check(x_T, sigmas)
    with _ctx(grad):
        return _ode(denoiser, x_T, sigmas, False)


def _randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def euler_maruyama_sample(denoiser: Denoiser, x_T: torch.Tensor, sigmas: torch.Tensor, *,
                          generator: Optional[torch.Generator] = None, grad: bool = False) -> torch.Tensor:
    """Reverse-time VE SDE, Euler-Maruyama: ``x <- x + (s^2 - s'^2) score + sqrt(s^2 - s'^2) z``.

    The reverse SDE of ``dx = sqrt(d sigma^2/dt) dW`` has drift ``-(d sigma^2/dt) score``; integrating it over
    ``[s', s]`` with the score frozen gives the step above. The final step to ``sigma = 0`` returns ``D(x, s)``.
    """
    sigmas = _check(x_T, sigmas)
    x = x_T
    with _ctx(grad):
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            if s_next == 0:
                x = denoiser(x, as_sigma_batch(s, x))
                continue
            den = denoiser(x, as_sigma_batch(s, x))
            var = s ** 2 - s_next ** 2
            x = x + var * (den - x) / s ** 2 + var.sqrt() * _randn_like(x, generator)
    return x


def edm_stochastic_sample(denoiser: Denoiser, x_T: torch.Tensor, sigmas: torch.Tensor, *,
                          generator: Optional[torch.Generator] = None, s_churn: float = 40.0, s_tmin: float = 0.05,
                          s_tmax: float = 50.0, s_noise: float = 1.003, grad: bool = False) -> torch.Tensor:
    """EDM Algorithm 2: Heun steps with "churn" (noise added to raise sigma by ``gamma`` before each step).

    ``gamma = min(s_churn / N, sqrt(2) - 1)`` for sigma in ``[s_tmin, s_tmax]``, else 0 (N = number of steps).
    """
    sigmas = _check(x_T, sigmas)
    n = len(sigmas) - 1
    x = x_T
    with _ctx(grad):
        for i in range(n):
            s, s_next = sigmas[i], sigmas[i + 1]
            gamma = min(s_churn / n, 2 ** 0.5 - 1) if s_tmin <= float(s) <= s_tmax else 0.0
            s_hat = s * (1 + gamma)
            if gamma > 0:
                x = x + (s_hat ** 2 - s ** 2).sqrt() * s_noise * _randn_like(x, generator)
            d = _d(denoiser, x, s_hat)
            x_next = x + (s_next - s_hat) * d
            if s_next > 0:
                x_next = x + (s_next - s_hat) * 0.5 * (d + _d(denoiser, x_next, s_next))
            x = x_next
    return x


SAMPLERS = {"heun": heun_sample, "euler": euler_sample, "euler_maruyama": euler_maruyama_sample,
            "edm_stochastic": edm_stochastic_sample}


def sample(denoiser: Denoiser, shape, n_steps: int = 32, sampler: str = "heun", generator=None,
           sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, dtype=torch.float32,
           device=None, **options) -> torch.Tensor:
    """Convenience: draw ``x_T``, build the rho-schedule and run ``SAMPLERS[sampler]``; returns ``[B, ...]``."""
    if sampler not in SAMPLERS:
        raise LatentgeoError(f"unknown sampler '{sampler}'; choose one of: {', '.join(SAMPLERS)}")
    x = initial_noise(shape, sigma_max, generator, dtype, device)
    sig = edm_sigmas(n_steps, sigma_min, sigma_max, rho, dtype=dtype, device=x.device)
    return SAMPLERS[sampler](denoiser, x, sig, generator=generator, **options)


def _schedule(lo: float, hi: float, steps: int, rho: float, dtype, device) -> torch.Tensor:
    s = edm_sigmas(steps + 1, lo, hi, rho, dtype=torch.float64)[:-1]  # hi ... lo, no trailing 0
    return s.to(dtype=dtype, device=device)


def pf_ode_encode(denoiser: Denoiser, x0: torch.Tensor, sigma: float, steps: int = 32, sigma_min: float = 0.002,
                  rho: float = 7.0, grad: bool = False) -> torch.Tensor:
    """Map data ``x0`` to ``x_sigma`` along the PF-ODE (Heun, rho-spaced from ``sigma_min`` up to ``sigma``).

    ``x0`` is taken as the state at ``sigma_min`` (the ODE is singular at 0). Inverse of :func:`pf_ode_decode`
    up to discretisation error.
    """
    if not (0 < sigma_min < sigma):
        raise LatentgeoError(f"need 0 < sigma_min < sigma for encoding, got sigma_min={sigma_min}, sigma={sigma}; "
                             "encode to a sigma above sigma_min, or lower sigma_min (it must stay > 0)")
    sig = _schedule(sigma_min, float(sigma), steps, rho, x0.dtype, x0.device).flip(0)
    with _ctx(grad):
        return _ode(denoiser, x0, sig, True)


def pf_ode_decode(denoiser: Denoiser, x_sigma: torch.Tensor, sigma: float, steps: int = 32,
                  sigma_min: float = 0.002, rho: float = 7.0, denoise: bool = False, grad: bool = False) -> torch.Tensor:
    """Map ``x_sigma`` back to data along the PF-ODE (Heun from ``sigma`` down to ``sigma_min``).

    Returns the state at ``sigma_min`` (exact inverse of :func:`pf_ode_encode` up to discretisation); with
    ``denoise=True`` a final step to 0 returns ``D(x, sigma_min)`` instead.
    """
    if not (0 < sigma_min < sigma):
        raise LatentgeoError(f"need 0 < sigma_min < sigma for decoding, got sigma_min={sigma_min}, sigma={sigma}; "
                             "decode from a sigma above sigma_min, or lower sigma_min (it must stay > 0)")
    sig = _schedule(sigma_min, float(sigma), steps, rho, x_sigma.dtype, x_sigma.device)
    if denoise:
        sig = torch.cat([sig, sig.new_zeros(1)])
    with _ctx(grad):
        return _ode(denoiser, x_sigma, sig, True)
