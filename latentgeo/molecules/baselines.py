"""Baselines on the same surface: the (simplified) string method for the minimum energy path.

Simplified string method (E, Ren & Vanden-Eijnden, J. Chem. Phys. 126, 164103, 2007): a chain of images between the
two states; each iteration moves every interior image one gradient-descent step on the smooth energy and then
redistributes the images uniformly in arc length (linear interpolation). The endpoints stay fixed at the states.
It converges to a minimum energy path, whose highest point is the saddle — the natural deterministic reference for
MaxEnergy. Cost: ``n_images - 2`` gradient evaluations per iteration.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from latentgeo.errors import LatentgeoError

__all__ = ["string_method", "straight_path", "densify"]


def straight_path(start: Sequence[float], end: Sequence[float], n: int = 128) -> torch.Tensor:
    """Straight segment between the states, ``[n, 2]`` float64."""
    s = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    a = torch.as_tensor(start, dtype=torch.float64)
    b = torch.as_tensor(end, dtype=torch.float64)
    return (1 - s) * a + s * b


def _reparametrize(x: torch.Tensor) -> torch.Tensor:
    """Redistribute the points of a polyline ``[n, 2]`` uniformly in arc length."""
    seg = (x[1:] - x[:-1]).norm(dim=-1)
    s = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
    if float(s[-1]) <= 0:
        return x
    target = torch.linspace(0, float(s[-1]), x.shape[0], dtype=x.dtype)
    idx = torch.searchsorted(s, target).clamp(1, x.shape[0] - 1)
    s0, s1 = s[idx - 1], s[idx]
    w = ((target - s0) / (s1 - s0).clamp_min(1e-300))[:, None]
    return (1 - w) * x[idx - 1] + w * x[idx]


def densify(path: torch.Tensor, per_segment: int = 8) -> torch.Tensor:
    """Linearly interpolate ``per_segment`` points into every segment of a polyline ``[n, 2]`` (for scoring)."""
    w = torch.linspace(0, 1, per_segment + 1, dtype=path.dtype)[:-1, None, None]
    seg = (1 - w) * path[:-1] + w * path[1:]  # [k, n-1, 2]
    return torch.cat([seg.transpose(0, 1).reshape(-1, 2), path[-1:]])


def string_method(potential, start: Sequence[float], end: Sequence[float], n_images: int = 64,
                  n_iter: int = 2000, step: float = 1e-3, init: torch.Tensor = None) -> torch.Tensor:
    """Minimum energy path by the simplified string method.

    Args:
        potential: smooth energy with counted ``grad`` (uses ``n_images - 2`` evaluations per iteration).
        start, end: the two states.
        n_images: number of images (endpoints included).
        n_iter: iterations; step: gradient-descent step.
        init: optional initial string ``[n_images, 2]`` (default: the straight segment).

    Returns:
        the string ``[n_images, 2]`` (unwrapped coordinates; wrap with ``potential.wrap`` to score).
    """
    if n_images < 3:
        raise LatentgeoError(f"n_images must be at least 3, got {n_images}")
    x = straight_path(start, end, n_images) if init is None else torch.as_tensor(init, dtype=torch.float64).clone()
    for _ in range(n_iter):
        g = potential.grad(x[1:-1])
        x = torch.cat([x[:1], x[1:-1] - step * g, x[-1:]])
        x = _reparametrize(x)
        if not torch.isfinite(x).all():
            raise LatentgeoError(f"string method diverged (step={step}); use a smaller step")
    return x
