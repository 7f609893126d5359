"""Sample-based distances between distributions: sliced Wasserstein, MMD, Frechet distance.

All functions take two samples ``x`` of shape ``[n, ...]`` and ``y`` of shape ``[m, ...]`` (flattened to vectors)
and return a Python float. They are offline and model-free; for image quality combine them with features from
:class:`latentgeo.metrics.FeatureClassifier` (see :func:`latentgeo.metrics.classifier_frechet_distance`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from latentgeo.errors import LatentgeoError, check_choice, check_finite, check_nonempty, check_positive

__all__ = ["sliced_wasserstein", "mmd", "frechet_distance", "gaussian_stats", "frechet_distance_samples",
           "median_bandwidth"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_2d(x: ArrayLike, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 0:
        raise LatentgeoError(f"{name} is a scalar; pass a sample of shape [n, ...]")
    if t.ndim == 1:
        t = t[:, None]  # a 1-D array is n scalar samples
    t = t.detach().reshape(t.shape[0], -1).to(dtype)
    check_nonempty(t, name)
    check_finite(t, name)
    return t


def _same_dim(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise LatentgeoError(f"the two samples have {x.shape[1]} and {y.shape[1]} features per sample; "
                             "compare samples of the same shape")


# ------------------------------------------------------------------------------------------- sliced Wasserstein

def _wasserstein_1d_pow(px: torch.Tensor, py: torch.Tensor, p: float) -> torch.Tensor:
    """``W_p^p`` between the empirical laws of the columns of ``px`` [n, L] and ``py`` [m, L] -> [L].

    Exact for uniform weights and any n, m: the quantile functions are step functions, so integrate
    ``|Q_x(u) - Q_y(u)|^p`` over the union of their breakpoints ``{i/n} U {j/m}``.
    """
    n, m = px.shape[0], py.shape[0]
    sx, _ = torch.sort(px, dim=0)
    sy, _ = torch.sort(py, dim=0)
    if n == m:
        return (sx - sy).abs().pow(p).mean(0)
    levels = torch.cat([torch.arange(1, n + 1, dtype=px.dtype) / n, torch.arange(1, m + 1, dtype=px.dtype) / m])
    levels, _ = torch.sort(levels)
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - widths / 2  # a level strictly inside each interval (zero-width ones get weight 0)
    ix = torch.clamp((mid * n).floor().long(), 0, n - 1)
    iy = torch.clamp((mid * m).floor().long(), 0, m - 1)
    return ((sx[ix] - sy[iy]).abs().pow(p) * widths[:, None]).sum(0)


def sliced_wasserstein(x: ArrayLike, y: ArrayLike, n_projections: int = 256,
                       generator: Optional[torch.Generator] = None, p: float = 2.0,
                       return_std: bool = False) -> Union[float, Tuple[float, float]]:
    """Sliced Wasserstein distance ``SW_p = (E_theta W_p^p(theta#x, theta#y))^(1/p)``.

    Args:
        x: [n, ...] sample; y: [m, ...] sample (flattened to d features; n and m may differ).
        n_projections: number of random directions ``theta``, uniform on the unit sphere S^{d-1}.
        generator: torch.Generator for the directions (seed it for reproducible values).
        p: order (>= 1).
        return_std: also return the standard error of the Monte-Carlo mean of ``W_p^p`` over directions.
    Returns:
        ``SW_p`` in the units of the data (float), or ``(SW_p, stderr of SW_p^p)``.

    Note: for ``y = x + s`` (same points, shifted) every 1-D projection is shifted by ``theta . s``, so
    ``SW_2^2 = E (theta . s)^2 = |s|^2 / d``.
    """
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    _same_dim(x, y)
    if not (isinstance(n_projections, int) and n_projections > 0):
        raise LatentgeoError(f"n_projections must be a positive integer, got {n_projections!r}; "
                             "pass e.g. n_projections=256")
    if not (p >= 1):
        raise LatentgeoError(f"p must be >= 1 for a Wasserstein distance, got {p}; pass p=1 or p=2")
    d = x.shape[1]
    theta = torch.randn(d, n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    w = _wasserstein_1d_pow(x @ theta, y @ theta, p)  # [L]
    sw = float(w.mean().clamp_min(0) ** (1.0 / p))
    if return_std:
        se = float(w.std(unbiased=True) / math.sqrt(n_projections)) if n_projections > 1 else float("nan")
        return sw, se
    return sw


# --------------------------------------------------------------------------------------------------------- MMD

def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min(0)


def median_bandwidth(x: ArrayLike, y: ArrayLike, max_points: int = 1000) -> float:
    """Median pairwise Euclidean distance of the pooled sample (the usual RBF bandwidth heuristic)."""
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    z = torch.cat([x[:max_points], y[:max_points]])
    d = _sq_dists(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    med = float(d[iu[0], iu[1]].median().sqrt()) if z.shape[0] > 1 else 1.0
    return med if med > 0 else 1.0


def _kernel(d2: torch.Tensor, kernel: str, bandwidths: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(d2)
    for h in bandwidths:
        if kernel == "rbf":
            out = out + torch.exp(-d2 / (2.0 * h * h))
        elif kernel == "laplacian":
            out = out + torch.exp(-d2.sqrt() / h)
        else:  # "imq": inverse multiquadric, heavy-tailed (keeps a signal for far-apart samples)
            out = out + h / torch.sqrt(h * h + d2)
    return out


def mmd(x: ArrayLike, y: ArrayLike, kernel: str = "rbf", bandwidths: Optional[Sequence[float]] = None,
        biased: bool = False) -> float:
    """Squared maximum mean discrepancy ``MMD^2(P, Q)`` between samples ``x`` [n, ...] and ``y`` [m, ...].

    The default is the UNBIASED U-statistic (diagonal terms dropped)::

        1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j) - 2/(nm) sum_{i,j} k(x_i,y_j)

    whose expectation is exactly ``MMD^2``; it can therefore be slightly negative when P = Q. ``biased=True``
    keeps the diagonals (V-statistic, always >= 0).

    Args:
        kernel: ``"rbf"`` (``exp(-|a-b|^2 / (2 h^2))``), ``"laplacian"`` (``exp(-|a-b|/h)``) or ``"imq"``
            (``h / sqrt(h^2 + |a-b|^2)``).
        bandwidths: list of ``h`` (data units); the kernel is the SUM over them (a characteristic multi-scale
            kernel). Default: the median pairwise distance times (0.5, 1, 2).
    Returns:
        MMD^2 as a float (units of the kernel, i.e. dimensionless).
    """
    check_choice(kernel, ["rbf", "laplacian", "imq"], "kernel")
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    _same_dim(x, y)
    n, m = x.shape[0], y.shape[0]
    if not biased and (n < 2 or m < 2):
        raise LatentgeoError("the unbiased MMD needs at least 2 samples on each side; pass more samples "
                             "or biased=True")
    if bandwidths is None:
        med = median_bandwidth(x, y)
        bandwidths = [0.5 * med, med, 2.0 * med]
    bandwidths = [float(check_positive(float(h), "bandwidth")) for h in np.atleast_1d(bandwidths)]
    kxx = _kernel(_sq_dists(x, x), kernel, bandwidths)
    kyy = _kernel(_sq_dists(y, y), kernel, bandwidths)
    kxy = _kernel(_sq_dists(x, y), kernel, bandwidths)
    if biased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


# ----------------------------------------------------------------------------------------------- Frechet distance

def _sym_sqrt(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix through its eigendecomposition (tiny negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: ArrayLike, C1: ArrayLike, mu2: ArrayLike, C2: ArrayLike) -> float:
    """Frechet (2-Wasserstein squared) distance between ``N(mu1, C1)`` and ``N(mu2, C2)``::

        |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr (C1^{1/2} C2 C1^{1/2})^{1/2}

    This is the quantity FID reports (squared units of the features). Computed in float64 through two symmetric
    eigendecompositions, so it stays real and finite for singular or nearly singular covariances (where
    ``scipy.linalg.sqrtm(C1 @ C2)`` can return complex values); the result is clamped at 0.

    Args:
        mu1, mu2: [d] means; C1, C2: [d, d] covariances (symmetric PSD).
    """
    mu1 = np.asarray(torch.as_tensor(mu1).detach().cpu().double(), dtype=np.float64).reshape(-1)
    mu2 = np.asarray(torch.as_tensor(mu2).detach().cpu().double(), dtype=np.float64).reshape(-1)
    C1 = np.asarray(torch.as_tensor(C1).detach().cpu().double(), dtype=np.float64)
    C2 = np.asarray(torch.as_tensor(C2).detach().cpu().double(), dtype=np.float64)
    d = mu1.shape[0]
    if mu2.shape[0] != d or C1.shape != (d, d) or C2.shape != (d, d):
        raise LatentgeoError(f"shapes do not match: mu1 {mu1.shape}, C1 {C1.shape}, mu2 {mu2.shape}, C2 {C2.shape}; "
                             "pass means [d] and covariances [d, d] of the same d")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("C1", C1), ("C2", C2)):
        check_finite(a, name)
    s1 = _sym_sqrt(C1)
    m = s1 @ C2 @ s1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(C1) + np.trace(C2) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


def gaussian_stats(x: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean [d] and unbiased covariance [d, d] (float64) of a sample ``x`` [n, ...]."""
    x = _as_2d(x, "x")
    if x.shape[0] < 2:
        raise LatentgeoError("a covariance needs at least 2 samples; pass more samples")
    mu = x.mean(0)
    xc = x - mu
    return mu.numpy(), (xc.T @ xc / (x.shape[0] - 1)).numpy()


def frechet_distance_samples(x: ArrayLike, y: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two samples (``[n, d]`` and ``[m, d]``)."""
    mx, cx = gaussian_stats(x)
    my, cy = gaussian_stats(y)
    if mx.shape != my.shape:
        raise LatentgeoError(f"the two samples have {mx.shape[0]} and {my.shape[0]} features; compare equal shapes")
    return frechet_distance(mx, cx, my, cy)
