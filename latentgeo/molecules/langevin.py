"""Batched overdamped Langevin dynamics on a :class:`~latentgeo.molecules.Potential`.

Two one-gradient-per-step schemes for ``dx = -grad U(x) dt + sqrt(2 kT) dW`` (counted by the potential):

- ``"em"`` Euler-Maruyama: ``x <- x - dt grad U(x) + sqrt(2 kT dt) xi_n``. Its stationary law is biased at first
  order in ``dt`` (on ``U = k x^2 / 2`` the variance is ``kT / (k (1 - k dt / 2))``, i.e. too hot).
- ``"lm"`` Leimkuhler-Matthews: the same drift with the noise ``sqrt(2 kT dt) (xi_n + xi_{n+1}) / 2``; second order
  for configurational averages (exact variance ``kT / k`` on the quadratic for any stable ``dt``), same cost.

Angle coordinates are wrapped into ``[-pi, pi)``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from latentgeo.errors import LatentgeoError, check_positive

__all__ = ["langevin", "boltzmann_samples", "uniform_starts", "LANGEVIN_SCHEMES"]

LANGEVIN_SCHEMES = ("em", "lm")


class _Noise:
    """Per-step noise of a scheme: i.i.d. normals (em) or the average of consecutive normals (lm)."""

    def __init__(self, scheme: str, shape, dtype, generator: Optional[torch.Generator]):
        from latentgeo.errors import check_choice

        self.scheme = check_choice(scheme, LANGEVIN_SCHEMES, "Langevin scheme")
        self.shape, self.dtype, self.gen = tuple(shape), dtype, generator
        self.prev = self._draw() if self.scheme == "lm" else None

    def _draw(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.gen, dtype=self.dtype)

    def __call__(self) -> torch.Tensor:
        if self.scheme == "em":
            return self._draw()
        nxt = self._draw()
        out = 0.5 * (self.prev + nxt)
        self.prev = nxt
        return out


def langevin(
    potential,
    x0: torch.Tensor,
    n_steps: int,
    step: float,
    kT: float = 1.0,
    generator: Optional[torch.Generator] = None,
    record_every: int = 0,
    extra_grad: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    scheme: str = "em",
):
    """Run ``n_steps`` of overdamped Langevin from ``x0`` ``[B, 2]`` (float64 recommended).

    Args:
        potential: the energy (its ``grad`` is counted).
        step: time step ``dt`` (energy units of kT, positions in the potential's units).
        kT: temperature (1 = the table's units).
        record_every: if > 0 also return the states every this many steps, ``[n_steps // record_every, B, 2]``.
        extra_grad: optional extra force term ``x -> grad V(x)`` (e.g. a tether), added to the potential's gradient.
        scheme: ``"em"`` (Euler-Maruyama) or ``"lm"`` (Leimkuhler-Matthews, see the module docstring).

    Returns:
        the final states ``[B, 2]`` (and the recorded trajectory when ``record_every > 0``).
    """
    check_positive(step, "step")
    check_positive(kT, "kT")
    if not (isinstance(n_steps, int) and n_steps >= 0):
        raise LatentgeoError(f"n_steps must be a non-negative integer, got {n_steps!r}; pass a whole number >= 0")
    x = torch.as_tensor(x0).clone()
    if x.ndim != 2:
        raise LatentgeoError(f"x0 has shape {tuple(x.shape)}; pass [B, 2] starting points")
    noise_scale = math.sqrt(2.0 * kT * step)
    noise = _Noise(scheme, x.shape, x.dtype, generator)
    rec = []
    for t in range(n_steps):
        g = potential.grad(x)
        if extra_grad is not None:
            g = g + extra_grad(x)
        x = x - step * g + noise_scale * noise()
        x = potential.wrap(x)
        if not torch.isfinite(x).all():
            raise LatentgeoError(f"Langevin diverged at step {t} (dt={step}); use a smaller step")
        if record_every and (t + 1) % record_every == 0:
            rec.append(x)
    if record_every:
        return x, torch.stack(rec) if rec else x.new_zeros((0,) + x.shape)
    return x


def uniform_starts(potential, n: int, generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` points uniform over the potential's box :attr:`bounds` -> ``[n, 2]``."""
    (x0, x1), (y0, y1) = potential.bounds
    u = torch.rand((n, 2), generator=generator, dtype=dtype)
    return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], -1)


def boltzmann_samples(
    potential,
    n_chains: int = 2000,
    n_steps: int = 1000,
    step: float = 1e-3,
    kT: float = 1.0,
    keep_last: int = 500,
    thin: int = 50,
    seed: int = 0,
    starts: Optional[torch.Tensor] = None,
    scheme: str = "em",
) -> torch.Tensor:
    """Locally equilibrated Boltzmann samples from many short chains.

    Chains start uniformly over the box (or at ``starts``), run ``n_steps``, and the states of the last
    ``keep_last`` steps are kept every ``thin`` steps (``scheme``: see :func:`langevin`). Barriers of ~36 kT
    (alanine) are never crossed at kT = 1, so this samples every metastable basin that some chain falls into, each
    locally at equilibrium — the training data of the diffusion model, not the global Boltzmann distribution. Costs
    ``n_chains * n_steps`` gradient evaluations.

    Returns:
        samples ``[n_chains * (keep_last // thin), 2]`` (float64).
    """
    if keep_last > n_steps:
        raise LatentgeoError(f"keep_last={keep_last} exceeds n_steps={n_steps}; keep at most n_steps states")
    gen = torch.Generator().manual_seed(seed)
    x = starts.to(torch.float64) if starts is not None else uniform_starts(potential, n_chains, gen)
    x = langevin(potential, x, n_steps - keep_last, step, kT, gen, scheme=scheme)
    x, rec = langevin(potential, x, keep_last, step, kT, gen, record_every=thin, scheme=scheme)
    return rec.reshape(-1, 2)
