"""Reference similarity measures to compare DiffED with: Euclidean distance, SSIM, rank correlations."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from latentgeo.errors import LatentgeoError, check_finite

__all__ = ["ssim", "euclidean", "rank_correlations"]


def _gauss_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, win: int = 7,
         win_sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image pair: ``a``, ``b`` [B, C, H, W] -> [B].

    Gaussian window (``win`` clipped to the image size, so 8x8 digits work), constants ``K1 = 0.01``, ``K2 = 0.03``
    of ``data_range`` (2 for images in [-1, 1]); 'valid' filtering; mean over channels and positions.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 4 or a.shape != b.shape:
        raise LatentgeoError(f"ssim needs two image batches [B, C, H, W] of the same shape; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
    check_finite(a, "a")
    check_finite(b, "b")
    a, b = a.double(), b.double()
    C = a.shape[1]
    w = min(win, a.shape[-1], a.shape[-2])
    k = _gauss_window(w, win_sigma, a.dtype, a.device)[None, None].expand(C, 1, w, w)

    def filt(x):
        return F.conv2d(x, k, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|`` per row of [B, ...] -> [B]."""
    if a.shape != b.shape or a.ndim < 1:
        raise LatentgeoError(f"euclidean needs two batches [B, ...] of the same shape; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
    return (a - b).flatten(1).norm(dim=1)


def rank_correlations(d: np.ndarray, **others: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Spearman and Kendall rank correlations of ``d`` with each named array (e.g. ``euclid=..., ssim=...``)."""
    from scipy.stats import kendalltau, spearmanr

    d = np.asarray(d, dtype=float).reshape(-1)
    check_finite(d, "d")
    out = {}
    for name, v in others.items():
        v = np.asarray(v, dtype=float).reshape(-1)
        if v.shape != d.shape:
            raise LatentgeoError(f"{name} has {v.size} values but d has {d.size}; pass one value per pair")
        check_finite(v, name)
        rho = spearmanr(d, v)
        tau = kendalltau(d, v)
        out[name] = {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
                     "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}
    return out
