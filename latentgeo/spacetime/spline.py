"""Spline curves in spacetime: a straight line in (log-SNR, x) plus a C2 cubic spline vanishing at both ends.

The offset is the natural cubic spline interpolating 0 at s = 0 and s = 1 and free values ``c_1..c_K`` at the
equispaced interior knots ``s_k = k / (K + 1)``. Interpolation is linear in the knot values, so on a fixed grid of
``N`` parameter values the whole curve is ``line(s) + B @ C`` with a constant basis matrix ``B`` [N, K]: evaluating
the curve costs one small matmul, with no per-point Python work.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.spacetime.family import lambda_of_sigma, sigma_of_lambda

__all__ = ["spline_basis", "SplineCurve"]


def spline_basis(n_points: int, n_nodes: int, s: Optional[np.ndarray] = None) -> np.ndarray:
    """Basis [N, K] of the natural cubic spline through (0, 0), (s_k, c_k), (1, 0), evaluated at ``s``.

    ``s`` defaults to ``linspace(0, 1, n_points)``. Column k is the spline of the k-th unit knot vector; the spline
    is C2, and its values vanish at s = 0 and s = 1 for any knot values.
    """
    if n_nodes < 1:
        raise LatentgeoError(f"n_nodes must be >= 1, got {n_nodes}; pass n_nodes=1 or more")
    K = int(n_nodes)
    h = 1.0 / (K + 1)
    # Natural spline: second derivatives M_0 = M_{K+1} = 0 and, at interior knots,
    # M_{i-1} + 4 M_i + M_{i+1} = 6 / h^2 (y_{i-1} - 2 y_i + y_{i+1}). Solved for the K unit knot vectors at once.
    Y = np.zeros((K + 2, K))
    Y[1:-1] = np.eye(K)
    A = 4.0 * np.eye(K) + np.eye(K, k=1) + np.eye(K, k=-1)
    M = np.zeros((K + 2, K))
    M[1:-1] = np.linalg.solve(A, 6.0 / h ** 2 * (Y[:-2] - 2 * Y[1:-1] + Y[2:]))
    s = np.linspace(0.0, 1.0, n_points) if s is None else np.asarray(s, dtype=float)
    i = np.clip(np.floor(s / h).astype(int), 0, K)  # segment index
    a = ((i + 1) * h - s)[:, None]  # distance to the right knot
    b = (s - i * h)[:, None]  # distance to the left knot
    B = (M[i] * a ** 3 + M[i + 1] * b ** 3) / (6 * h) + (Y[i] - M[i] * h ** 2 / 6) * a / h \
        + (Y[i + 1] - M[i + 1] * h ** 2 / 6) * b / h
    B[np.isclose(s, 0.0)] = 0.0  # exact zeros at the ends (float round-off otherwise)
    B[np.isclose(s, 1.0)] = 0.0
    return B


def _validate_ends(x_a: torch.Tensor, sigma_a: torch.Tensor, x_b: torch.Tensor, sigma_b: torch.Tensor) -> None:
    """Endpoints [P, ...] of one shape, finite, with sigmas [P] finite and > 0 (log-SNR must exist)."""
    if x_a.ndim < 1 or x_a.shape != x_b.shape:
        raise LatentgeoError(f"x_a and x_b must be [P, ...] with the same shape; got {tuple(x_a.shape)} and "
                             f"{tuple(x_b.shape)}")
    for t, nm in ((x_a, "x_a"), (x_b, "x_b")):
        if not bool(torch.isfinite(t).all()):
            raise LatentgeoError(f"{nm} contains NaN or inf values; pass finite endpoints")
    for t, nm in ((sigma_a, "sigma_a"), (sigma_b, "sigma_b")):
        if tuple(t.shape) != (x_a.shape[0],):
            raise LatentgeoError(f"{nm} has shape {tuple(t.shape)}; pass one noise level per curve, [{x_a.shape[0]}]")
        if not bool((torch.isfinite(t) & (t > 0)).all()):
            raise LatentgeoError(f"{nm} must be finite and > 0 at every endpoint (log-SNR = -2 log sigma), got "
                                 f"{t.detach().reshape(-1)[:4].tolist()}; use a small sigma_min such as 0.01")


class SplineCurve:
    """``P`` spacetime curves sharing one spline basis.

    Args:
        x_a, x_b: endpoints in data space, [P, ...].
        sigma_a, sigma_b: endpoint noise levels, [P].
        n_nodes: number of free interior knots K.
        nodes: optional initial knot values [P, K, 1 + n] (column 0 is the log-SNR offset, the rest the x offset,
            flattened); zero by default (the straight line).
    The optimisable tensor is ``self.nodes``.
    """

    def __init__(self, x_a: torch.Tensor, sigma_a: torch.Tensor, x_b: torch.Tensor, sigma_b: torch.Tensor,
                 n_nodes: int, nodes: Optional[torch.Tensor] = None):
        _validate_ends(x_a, sigma_a, x_b, sigma_b)
        if int(n_nodes) < 1:
            raise LatentgeoError(f"n_nodes must be >= 1, got {n_nodes}; pass n_nodes=1 or more")
        self.shape = tuple(x_a.shape[1:])
        self.P = x_a.shape[0]
        self.xa = x_a.reshape(self.P, -1)
        self.xb = x_b.reshape(self.P, -1)
        self.la = lambda_of_sigma(sigma_a)
        self.lb = lambda_of_sigma(sigma_b)
        self.n_nodes = int(n_nodes)
        dim = 1 + self.xa.shape[1]
        if nodes is None:
            nodes = torch.zeros(self.P, self.n_nodes, dim, dtype=x_a.dtype, device=x_a.device)
        else:
            nodes = torch.as_tensor(nodes, dtype=x_a.dtype, device=x_a.device)
            if nodes.numel() != self.P * self.n_nodes * dim:
                raise LatentgeoError(f"nodes has shape {tuple(nodes.shape)} but the curves need [P, K, 1 + n] = "
                                     f"[{self.P}, {self.n_nodes}, {dim}]; pass nodes of that shape, or None for the "
                                     "straight segment")
            if not bool(torch.isfinite(nodes).all()):
                raise LatentgeoError("nodes contains NaN or inf values; pass finite knot values")
            nodes = nodes.reshape(self.P, self.n_nodes, dim)
        self.nodes = nodes.detach().clone().requires_grad_(True)
        self._cache = {}

    def _grid(self, n_points: int):
        if n_points not in self._cache:
            B = torch.as_tensor(spline_basis(n_points, self.n_nodes), dtype=self.xa.dtype, device=self.xa.device)
            s = torch.linspace(0.0, 1.0, n_points, dtype=self.xa.dtype, device=self.xa.device)
            self._cache[n_points] = (B, s)
        return self._cache[n_points]

    def evaluate(self, n_points: int, nodes: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Points ``xs`` [P, N, ...] and ``sigmas`` [P, N] at N equispaced parameter values (differentiable)."""
        B, s = self._grid(n_points)
        nodes = self.nodes if nodes is None else nodes
        return _spline_points(nodes, self.xa, self.xb, self.la, self.lb, B, s, self.shape)


def _spline_points(nodes: torch.Tensor, xa: torch.Tensor, xb: torch.Tensor, la: torch.Tensor, lb: torch.Tensor,
                   B: torch.Tensor, s: torch.Tensor, shape: Tuple[int, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-tensor curve evaluation (also traced by :mod:`latentgeo.spacetime.fast`): knots [P, K, 1 + n],
    flat endpoints [P, n], end log-SNRs [P], basis [N, K], parameters [N] -> (xs [P, N, *shape], sigmas [P, N])."""
    P, N = xa.shape[0], B.shape[0]
    off = torch.matmul(B, nodes)  # [P, N, 1 + n]
    lam = la[:, None] + s[None] * (lb - la)[:, None] + off[..., 0]
    x = xa[:, None] + s[None, :, None] * (xb - xa)[:, None] + off[..., 1:]
    return x.reshape(P, N, *shape), sigma_of_lambda(lam)
