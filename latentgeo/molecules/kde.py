"""A training-free denoiser: the exact posterior mean of a Gaussian kernel density estimate of samples.

For data ``p(x0) = (1/M) sum_i N(x0; x_i, h^2 I)`` and ``x = x0 + sigma n``:
``p(x) = (1/M) sum_i N(x; x_i, (h^2 + sigma^2) I)`` and
``E[x0 | x] = sum_i w_i(x) (x_i + h^2 / (h^2 + sigma^2) (x - x_i))`` with ``w = softmax_i(-|x - x_i|^2 / (2 (h^2 + sigma^2)))``.
It is smooth in ``(x, sigma)`` and differentiable twice, so spacetime geodesics can use it directly (quick tests,
or as a nonparametric reference next to a trained network).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from latentgeo.errors import LatentgeoError, check_positive

__all__ = ["KDEDenoiser"]


class KDEDenoiser(nn.Module):
    """Exact denoiser of a Gaussian KDE of ``samples`` ``[M, d]`` with bandwidth ``h``.

    Args:
        samples: data points ``[M, d]``.
        bandwidth: kernel standard deviation ``h`` (``h = 0``: the empirical distribution itself).
        period: if given (e.g. ``2 pi`` for angles), every sample is replicated at the shifts ``{-period, 0, period}^d``
            so that the density is periodic near the edges of the box (costs ``3^d`` times more components).

    ``forward(x [B, d], sigma [B] or float) -> [B, d]`` in the dtype of ``x``.
    """

    def __init__(self, samples: torch.Tensor, bandwidth: float = 0.05, period: Optional[float] = None):
        super().__init__()
        s = torch.as_tensor(samples)
        if s.ndim != 2 or s.shape[0] == 0:
            raise LatentgeoError(f"samples have shape {tuple(s.shape)}; pass a non-empty [M, d] array")
        if not (bandwidth >= 0):
            raise LatentgeoError(f"bandwidth must be >= 0, got {bandwidth}; pass e.g. bandwidth=0.05 (the default)")
        if period is not None:
            check_positive(period, "period")
            d = s.shape[1]
            shifts = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=s.dtype)] * d).reshape(-1, d)
            s = (s[None] + period * shifts[:, None]).reshape(-1, d)
        self.register_buffer("samples", s.to(torch.float64))
        self.bandwidth = float(bandwidth)

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        sig = torch.as_tensor(sigma, dtype=x.dtype)
        if sig.ndim == 0:
            sig = sig.expand(x.shape[0])
        xs = self.samples.to(x.dtype)
        v = self.bandwidth ** 2 + sig ** 2  # [B]
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ xs.T + (xs * xs).sum(-1)  # [B, M]
        w = torch.softmax(-d2 / (2 * v[:, None]), dim=-1)
        m = w @ xs  # [B, d]
        shrink = (self.bandwidth ** 2 / v)[:, None]
        return m + shrink * (x - m)
