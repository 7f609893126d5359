"""Constraints for spacetime geodesics, as penalties ``penalty(xs, sigmas) -> scalar`` (REFERENCE.md §3).

- Low-variance transitions: keep the curve at high SNR with ``weight * mean_n softplus_beta(lambda_min - lambda_n)``
  (anchor: beta = 10, lambda_min = 3, weight ramped up to 100), ``lambda = -2 log sigma``.
- Region avoidance: keep every curve point at least ``kl_min`` nats from a forbidden spacetime state ``z*``, with the
  simulation-free ``KL(p_{z*} || p_{gamma_n})`` of :func:`latentgeo.spacetime.kl_from_state`:
  ``weight * mean_n softplus(kl_min - KL_n)``.

Each penalty object has ``set_step(step, steps)``, which :func:`latentgeo.spacetime.geodesic` calls before every
step, so that the weight ramps linearly from 0 to ``weight`` over the first ``ramp`` fraction of the optimisation
(start from the unconstrained geodesic's neighbourhood, then tighten). Penalties accept single curves
(``xs`` [N, ...], ``sigmas`` [N]) or batched ones ([P, N, ...], [P, N]; the mean runs over all points).
Combine them with ``+`` (a :class:`SumPenalty`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from latentgeo.errors import LatentgeoError, check_finite, check_positive
from latentgeo.spacetime.family import _check_sigma, kl_from_state, lambda_of_sigma

__all__ = ["snr_penalty_value", "region_kl", "SNRPenalty", "RegionAvoidance", "SumPenalty"]


def snr_penalty_value(sigmas: torch.Tensor, lambda_min: float = 3.0, beta: float = 10.0) -> torch.Tensor:
    """``mean_n softplus_beta(lambda_min - lambda_n)`` with ``lambda = -2 log sigma`` (scalar, differentiable)."""
    _check_sigma(torch.as_tensor(sigmas).reshape(-1))
    return F.softplus(lambda_min - lambda_of_sigma(sigmas), beta=beta).mean()


def region_kl(denoiser: Callable, xs: torch.Tensor, sigmas: torch.Tensor, x_star: torch.Tensor, sigma_star: float,
              n_probes: Optional[int] = 1, n_bridge: int = 32,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``KL(p_{z*} || p_{gamma_n})`` along a curve ([N] or [P, N]); see :func:`kl_from_state`."""
    return kl_from_state(denoiser, x_star, sigma_star, xs, sigmas, n_bridge=n_bridge, n_probes=n_probes,
                         generator=generator)


def _finite(value, name: str, low: Optional[float] = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LatentgeoError(f"{name} must be a number, got {value!r}; pass an ordinary number") from None
    if not math.isfinite(v) or (low is not None and v < low):
        bound = f" and >= {low:g}" if low is not None else ""
        raise LatentgeoError(f"{name} must be finite{bound}, got {value!r}; "
                             f"pass a finite number{'' if low is None else f' >= {low:g}'}")
    return v


class _Ramped:
    def __init__(self, weight: float, ramp: float):
        self.weight = _finite(weight, "weight", 0.0)
        self.ramp = _finite(ramp, "ramp", 0.0)
        self.scale = 1.0

    def set_step(self, step: int, steps: int) -> None:
        """Linear ramp of the weight over the first ``ramp`` fraction of ``steps`` (no ramp if ``ramp`` is 0)."""
        self.scale = 1.0 if self.ramp <= 0 else min(1.0, (step + 1) / max(1.0, self.ramp * steps))

    def __add__(self, other):
        return SumPenalty(self, other)


class SNRPenalty(_Ramped):
    """Low-variance transitions: ``weight * mean_n softplus_beta(lambda_min - lambda_n)``.

    Args: weight (final, after the ramp; anchor 100), lambda_min (anchor 3), beta (softplus sharpness, anchor 10),
    ramp (fraction of the steps over which the weight grows from 0).
    """

    def __init__(self, weight: float = 100.0, lambda_min: float = 3.0, beta: float = 10.0, ramp: float = 0.5):
        super().__init__(weight, ramp)
        self.lambda_min = _finite(lambda_min, "lambda_min")
        self.beta = check_positive(float(beta), "beta")

    def __call__(self, xs: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return self.scale * self.weight * snr_penalty_value(sigmas, self.lambda_min, self.beta)


class RegionAvoidance(_Ramped):
    """Region avoidance: ``weight * mean_n softplus(kl_min - KL(z* || gamma_n))``.

    Args:
        denoiser: the model (the same one the geodesic uses).
        x_star, sigma_star: the forbidden spacetime state ``z* = (x*, sigma*)``; ``x_star`` has the data shape.
        kl_min: how many nats every curve point should stay away from ``z*``.
        weight, ramp: final weight and ramp fraction.
        n_probes: divergence probes (``None``: exact, for low dimensions); n_bridge: points of the quadrature path
            from ``z*`` to the curve's start.
    """

    def __init__(self, denoiser: Callable, x_star, sigma_star: float, kl_min: float = 3.0, weight: float = 1.0,
                 ramp: float = 0.5, n_probes: Optional[int] = 1, n_bridge: int = 32,
                 generator: Optional[torch.Generator] = None):
        super().__init__(weight, ramp)
        self.denoiser = denoiser
        self.x_star = torch.as_tensor(x_star)
        check_finite(self.x_star, "x_star")
        self.sigma_star = check_positive(float(sigma_star), "sigma_star")
        self.kl_min = _finite(kl_min, "kl_min")
        if int(n_bridge) < 2:
            raise LatentgeoError(f"n_bridge must be >= 2, got {n_bridge}; "
                                 "pass n_bridge=2 or more (both ends of the bridge)")
        self.n_probes, self.n_bridge, self.generator = n_probes, int(n_bridge), generator

    def kl(self, xs: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return region_kl(self.denoiser, xs, sigmas, self.x_star.to(xs.dtype), self.sigma_star, self.n_probes,
                         self.n_bridge, self.generator)

    def __call__(self, xs: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return self.scale * self.weight * F.softplus(self.kl_min - self.kl(xs, sigmas)).mean()


class SumPenalty:
    """Sum of penalties (forwards ``set_step`` to those that have it)."""

    def __init__(self, *parts: Union[Callable, "SumPenalty"]):
        self.parts = []
        for p in parts:
            self.parts.extend(p.parts if isinstance(p, SumPenalty) else [p])

    def set_step(self, step: int, steps: int) -> None:
        for p in self.parts:
            if hasattr(p, "set_step"):
                p.set_step(step, steps)

    def __add__(self, other):
        return SumPenalty(self, other)

    def __call__(self, xs: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return sum(p(xs, sigmas) for p in self.parts)
