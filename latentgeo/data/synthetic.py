"""Synthetic point clouds with known laws (the ground truth that estimators are tested against).

Every sampler is a plain function ``f(n, ..., seed=0, dtype=torch.float32) -> Tensor [n, D]``: the same
``(n, parameters, seed)`` always gives the same tensor, and a private ``torch.Generator`` is used so the
global RNG is never touched. Sampling happens in float64 and is cast to ``dtype`` at the end (float32 by
default, as everywhere in :mod:`latentgeo.data`; pass ``dtype=torch.float64`` on paths where identities are
checked to high precision).

Laws (all exact, so oracles in :mod:`latentgeo.fisher.exact` can be built from the same parameters):

* :func:`gaussian_mixture_subspace` - GPE paper §8.1: a 2-D Gaussian mixture in the first two coordinates of
  R^dim, small isotropic Gaussian noise in the others. :func:`subspace_mixture_params` returns its exact
  (weights, means, covs).
* :func:`embedded_gaussian` - y ~ N(0, I_2) embedded isometrically in R^dim.
* :func:`anisotropic_gaussian` - x ~ N(0, I_2) mapped by diag(sqrt(1+delta0), sqrt(1-delta0)).
* :func:`ripple` - x ~ N(0, I_2) mapped to (x1, x2, eps0 sin(omega x1)) in R^3.
* :func:`two_moons`, :func:`rings`, :func:`checkerboard` - classic 2-D toys.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch

from latentgeo.errors import LatentgeoError

__all__ = [
    "subspace_mixture_params",
    "gaussian_mixture_subspace",
    "embedding_frame",
    "embedded_gaussian",
    "anisotropic_gaussian",
    "ripple",
    "two_moons",
    "rings",
    "checkerboard",
]

TensorOrPair = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _gen(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LatentgeoError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LatentgeoError(f"number of samples n must be a positive integer, got {n!r}; pass e.g. n=1000")
    return n


def _check_dim(dim: int, minimum: int = 2) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < minimum:
        raise LatentgeoError(f"dim must be an integer >= {minimum}, got {dim!r}; pass e.g. dim={max(minimum, 10)}")
    return dim


def _finite_nonneg(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LatentgeoError(f"{name} must be a finite number >= 0, got {value!r}; pass 0 or a positive number")
    return float(value)


# --------------------------------------------------------------------------------------------------------------
# GPE §8.1: Gaussian mixture concentrated near a 2-D subspace
# --------------------------------------------------------------------------------------------------------------


def subspace_mixture_params(
    dim: int = 10,
    n_components: int = 8,
    radius: float = 2.0,
    component_std: float = 0.25,
    noise: float = 0.05,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact parameters of :func:`gaussian_mixture_subspace` (float64).

    Component k has weight ``1/K``, mean ``radius * (cos(2 pi k/K), sin(2 pi k/K), 0, ..., 0)`` and diagonal
    covariance ``diag(component_std^2, component_std^2, noise^2, ..., noise^2)``.
    ``n_components = 1`` puts the single component at the origin.

    Returns ``(weights [K], means [K, dim], covs [K, dim, dim])`` — ready for
    ``latentgeo.fisher.exact.GaussianMixture(weights, means, covs)``.
    """
    _check_dim(dim)
    if not isinstance(n_components, int) or isinstance(n_components, bool) or n_components < 1:
        raise LatentgeoError(f"n_components must be a positive integer, got {n_components!r}; pass e.g. 8")
    radius = _finite_nonneg(radius, "radius")
    component_std = _finite_nonneg(component_std, "component_std")
    noise = _finite_nonneg(noise, "noise")
    k = n_components
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    means = torch.zeros(k, dim, dtype=torch.float64)
    if k > 1:
        angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        means[:, 0] = radius * torch.cos(angles)
        means[:, 1] = radius * torch.sin(angles)
    diag = torch.full((dim,), noise**2, dtype=torch.float64)
    diag[:2] = component_std**2
    covs = torch.diag_embed(diag).expand(k, dim, dim).clone()
    return weights, means, covs


def gaussian_mixture_subspace(
    n: int,
    dim: int = 10,
    n_components: int = 8,
    seed: int = 0,
    noise: float = 0.05,
    radius: float = 2.0,
    component_std: float = 0.25,
    return_labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TensorOrPair:
    """Gaussian mixture in R^dim living near the plane of the first two coordinates (GPE paper §8.1).

    The first two coordinates carry a 2-D mixture of ``n_components`` equal-weight isotropic Gaussians
    (std ``component_std``) whose means sit on a circle of radius ``radius``; the remaining ``dim - 2``
    coordinates are independent N(0, noise^2). Exact parameters: :func:`subspace_mixture_params`.

    Returns ``x`` of shape ``[n, dim]`` (``dtype``), values unbounded (≈ within ±(radius + 4 component_std) in
    the first two coordinates, ±4 noise elsewhere), and if ``return_labels`` also ``labels`` ``[n]`` int64 in
    ``[0, n_components)`` (the component each sample came from).
    """
    _check_n(n)
    weights, means, covs = subspace_mixture_params(dim, n_components, radius, component_std, noise)
    g = _gen(seed)
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    std = torch.sqrt(torch.diagonal(covs[0]))
    x = means[labels] + torch.randn(n, dim, generator=g, dtype=torch.float64) * std
    x = x.to(dtype)
    return (x, labels) if return_labels else x


# --------------------------------------------------------------------------------------------------------------
# Fisher toys (REFERENCE.md §2)
# --------------------------------------------------------------------------------------------------------------


def embedding_frame(dim: int, frame: str = "coords", frame_seed: int = 0) -> torch.Tensor:
    """Orthonormal 2-frame ``U`` of shape ``[dim, 2]`` (float64, ``U^T U = I_2``) used by :func:`embedded_gaussian`.

    ``frame="coords"``: the first two coordinate axes (``U = [e1, e2]``).
    ``frame="random"``: a fixed random frame, the Q factor of a QR decomposition of a ``[dim, 2]`` standard
    normal matrix drawn from ``frame_seed`` (independent of the sample seed, so the frame stays fixed across
    sample seeds and splits).
    """
    _check_dim(dim)
    if frame == "coords":
        u = torch.zeros(dim, 2, dtype=torch.float64)
        u[0, 0] = u[1, 1] = 1.0
        return u
    if frame == "random":
        a = torch.randn(dim, 2, generator=_gen(frame_seed), dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        # Fix the sign convention so the frame is unique for a given seed.
        return q * torch.sign(torch.diagonal(r))
    raise LatentgeoError(f"unknown frame '{frame}'; choose one of: coords, random")


def embedded_gaussian(
    n: int,
    dim: int = 16,
    seed: int = 0,
    frame: str = "coords",
    frame_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """y ~ N(0, I_2) embedded isometrically in R^dim: ``x = U y`` with ``U = embedding_frame(dim, frame)``.

    Default ``frame="coords"``: x = (y1, y2, 0, ..., 0), the first two coordinates. With ``frame="random"`` a
    fixed random orthonormal 2-frame (see :func:`embedding_frame`). Either way pairwise distances equal those
    of y, and the law is the degenerate Gaussian N(0, U U^T) whose FIR is
    ``R(tau) = -[2/(1+tau)^2 + (dim-2)/tau^2]``.

    Returns ``[n, dim]`` (``dtype``), unbounded (≈ ±4).
    """
    _check_n(n)
    u = embedding_frame(dim, frame, frame_seed)
    y = torch.randn(n, 2, generator=_gen(seed), dtype=torch.float64)
    return (y @ u.T).to(dtype)


def anisotropic_gaussian(
    n: int,
    delta0: float = 0.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x ~ N(0, I_2) mapped by ``A = diag(sqrt(1+delta0), sqrt(1-delta0))`` (tangential-distortion toy).

    ``delta0`` must lie in (-1, 1). The law is N(0, diag(1+delta0, 1-delta0)).
    Returns ``[n, 2]`` (``dtype``), unbounded.
    """
    _check_n(n)
    if not isinstance(delta0, (int, float)) or not math.isfinite(delta0) or not -1.0 < delta0 < 1.0:
        raise LatentgeoError(f"delta0 must lie strictly between -1 and 1, got {delta0!r}; pass e.g. delta0=0.5")
    x = torch.randn(n, 2, generator=_gen(seed), dtype=torch.float64)
    scale = torch.tensor([math.sqrt(1 + delta0), math.sqrt(1 - delta0)], dtype=torch.float64)
    return (x * scale).to(dtype)


def ripple(
    n: int,
    eps0: float = 0.1,
    omega: float = 5.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x ~ N(0, I_2) mapped to ``(x1, x2, eps0 * sin(omega * x1))`` in R^3 (curvature-injection toy).

    Returns ``[n, 3]`` (``dtype``); the third coordinate lies in ``[-|eps0|, |eps0|]``.
    """
    _check_n(n)
    for value, name in ((eps0, "eps0"), (omega, "omega")):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LatentgeoError(f"{name} must be a finite number, got {value!r}; pass an ordinary number such as 0.5")
    x = torch.randn(n, 2, generator=_gen(seed), dtype=torch.float64)
    z = eps0 * torch.sin(omega * x[:, :1])
    return torch.cat([x, z], dim=1).to(dtype)


# --------------------------------------------------------------------------------------------------------------
# 2-D toys
# --------------------------------------------------------------------------------------------------------------


def two_moons(
    n: int,
    seed: int = 0,
    noise: float = 0.1,
    return_labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TensorOrPair:
    """Two interleaved half circles in R^2, centred at the origin, plus N(0, noise^2 I) jitter.

    Moon 0: ``(cos t, sin t) - (0.5, 0.25)``; moon 1: ``(1 - cos t, 0.5 - sin t) - (0.5, 0.25)``, with
    ``t ~ U[0, pi]`` and each point's moon chosen with probability 1/2.
    Returns ``[n, 2]`` (``dtype``), within about [-1.5, 1.5] x [-1, 1] for small noise; with
    ``return_labels`` also the moon index ``[n]`` int64 in {0, 1}.
    """
    _check_n(n)
    noise = _finite_nonneg(noise, "noise")
    g = _gen(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    x = torch.where(labels[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = x.to(dtype)
    return (x, labels) if return_labels else x


def rings(
    n: int,
    seed: int = 0,
    n_rings: int = 3,
    noise: float = 0.05,
    return_labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TensorOrPair:
    """Concentric circles of radii ``1, 2, ..., n_rings`` scaled by ``1/n_rings`` (outer ring has radius 1).

    Each point picks a ring with probability proportional to its radius (uniform density along arc length),
    an angle ``~ U[0, 2 pi)``, then gets N(0, noise^2 I) jitter.
    Returns ``[n, 2]`` (``dtype``), within about [-1, 1]^2 for small noise; with ``return_labels`` also the
    ring index ``[n]`` int64 in ``[0, n_rings)`` (0 = innermost).
    """
    _check_n(n)
    noise = _finite_nonneg(noise, "noise")
    if not isinstance(n_rings, int) or isinstance(n_rings, bool) or n_rings < 1:
        raise LatentgeoError(f"n_rings must be a positive integer, got {n_rings!r}; pass e.g. 3")
    g = _gen(seed)
    radii = torch.arange(1, n_rings + 1, dtype=torch.float64) / n_rings
    labels = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = radii[labels]
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = x.to(dtype)
    return (x, labels) if return_labels else x


def checkerboard(
    n: int,
    seed: int = 0,
    n_cells: int = 4,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform law on the dark squares of an ``n_cells x n_cells`` checkerboard covering [-2, 2]^2.

    Cell ``(i, j)`` (columns i, rows j, each of side ``4/n_cells``) is dark when ``i + j`` is even; dark cells
    are equally likely and points are uniform inside them. Returns ``[n, 2]`` (``dtype``) in [-2, 2]^2.
    """
    _check_n(n)
    if not isinstance(n_cells, int) or isinstance(n_cells, bool) or n_cells < 2:
        raise LatentgeoError(f"n_cells must be an integer >= 2, got {n_cells!r}; pass e.g. 4")
    g = _gen(seed)
    ii, jj = torch.meshgrid(torch.arange(n_cells), torch.arange(n_cells), indexing="ij")
    dark = ((ii + jj) % 2 == 0).flatten()
    cells = torch.stack([ii.flatten(), jj.flatten()], dim=1)[dark].to(torch.float64)
    pick = torch.randint(0, cells.shape[0], (n,), generator=g)
    side = 4.0 / n_cells
    x = -2.0 + side * (cells[pick] + torch.rand(n, 2, generator=g, dtype=torch.float64))
    return x.to(dtype)
