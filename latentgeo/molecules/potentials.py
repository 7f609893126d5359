"""Two-dimensional potential energy surfaces for transition path sampling.

Every potential maps positions ``x`` of shape ``[B, 2]`` (torch, any float dtype) to energies ``[B]`` in units of kT
(kT = 1). Each potential counts its gradient evaluations in ``n_grad_evals``: one per point per call of
:meth:`Potential.grad` (or :meth:`Potential.energy_and_grad`), which is the currency of the TPS benchmark.

- :class:`AlanineTable` — the alanine dipeptide (phi, psi) energy table (89 x 89 periodic grid on [-pi, pi)), with
  nearest-grid lookup (angles wrapped) for *scoring* and a least-squares 2-D Fourier surrogate for *gradients*.
- :class:`MuellerBrown` — the analytic Mueller-Brown surface with the standard constants.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from latentgeo.data.alanine import load_alanine_table  # noqa: F401  (re-exported)
from latentgeo.errors import LatentgeoError, check_positive

__all__ = [
    "Potential",
    "AlanineTable",
    "MuellerBrown",
    "load_alanine_table",
    "wrap_angle",
    "ALANINE_START",
    "ALANINE_END",
    "MUELLER_BROWN_MINIMA",
]

#: Transition states of the alanine dipeptide benchmark (radians): (phi, psi) of the two metastable states.
ALANINE_START = (-2.55, 2.7)
ALANINE_END = (0.95, -0.4)
#: Mueller-Brown minima (x, y) and their energies (standard constants).
MUELLER_BROWN_MINIMA = (((-0.558, 1.442), -146.70), ((0.623, 0.028), -108.17), ((-0.050, 0.467), -80.77))



def wrap_angle(x):
    """Wrap angles (radians) into ``[-pi, pi)``; works on torch tensors and numpy arrays."""
    if isinstance(x, torch.Tensor):
        return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
    return np.mod(np.asarray(x) + np.pi, 2 * np.pi) - np.pi


class Potential:
    """Base class: ``energy(x) -> [B]`` and counted ``grad(x) -> [B, 2]`` for ``x`` of shape ``[B, 2]``.

    Attributes:
        period: ``2 pi`` for angle coordinates (positions are wrapped into ``[-pi, pi)``), ``None`` for Euclidean.
        n_grad_evals: number of points whose gradient was evaluated since construction / :meth:`reset_counter`.
        bounds: ``((x_lo, x_hi), (y_lo, y_hi))`` box used for plots and uniform initialisation.
    """

    period: Optional[float] = None
    bounds: Tuple[Tuple[float, float], Tuple[float, float]] = ((-math.pi, math.pi), (-math.pi, math.pi))

    def __init__(self) -> None:
        self.n_grad_evals = 0

    def reset_counter(self) -> int:
        """Zero the gradient-evaluation counter; returns the old count."""
        n, self.n_grad_evals = self.n_grad_evals, 0
        return n

    # subclasses implement these two (uncounted)
    def _energy(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _energy_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        if x.ndim != 2 or x.shape[-1] != 2:
            raise LatentgeoError(f"positions have shape {tuple(x.shape)}; pass a [B, 2] array of (x, y) points")
        return x

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Smooth energy ``[B]`` at ``x`` ``[B, 2]`` (not counted: only gradients are)."""
        return self._energy(self._check(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient ``[B, 2]`` of the energy; adds ``B`` to :attr:`n_grad_evals`."""
        return self.energy_and_grad(x)[1]

    def energy_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(energy [B], gradient [B, 2])``; adds ``B`` to :attr:`n_grad_evals`."""
        x = self._check(x)
        self.n_grad_evals += int(x.shape[0])
        return self._energy_and_grad(x)

    def score_energy(self, x) -> np.ndarray:
        """Energy used to *score* paths (numpy ``[...]`` for ``x`` ``[..., 2]``); the smooth energy by default."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        shp = x.shape[:-1]
        return self._energy(x.reshape(-1, 2)).reshape(shp).numpy()

    def wrap(self, x):
        """Map positions into the fundamental domain (identity for Euclidean potentials)."""
        if self.period is None:
            return x
        return wrap_angle(x)


class AlanineTable(Potential):
    """Alanine dipeptide energy on the (phi, psi) torus.

    Scoring uses the TABLE: :meth:`table_energy` takes the nearest grid point after wrapping angles into
    ``[-pi, pi)``. Dynamics use a smooth surrogate: the least-squares fit of a real 2-D Fourier series with
    frequencies ``0..n_freq`` in each angle (basis ``1, cos k a, sin k a``), which on the full uniform grid equals the
    truncated discrete Fourier series. ``fit_max_error`` / ``fit_rms_error`` report its error at the grid points
    (``n_freq = 20``: max about 0.018 kT, rms 0.004 kT on energies spanning 0..96).

    Args:
        n_freq: highest Fourier frequency of the surrogate (``1 <= n_freq <= 44``).
        path: optional table file (default: the packaged copy).
    """

    period = 2 * math.pi

    def __init__(self, n_freq: int = 20, path: Optional[str] = None):
        super().__init__()
        if not (isinstance(n_freq, int) and 1 <= n_freq <= 44):
            raise LatentgeoError(f"n_freq must be an integer in 1..44 (89-point grid), got {n_freq!r}; "
                                 "pass e.g. n_freq=20 (the default)")
        self.phi, self.psi, self.table = load_alanine_table(path)
        self.n_grid = self.phi.size
        self.spacing = 2 * math.pi / self.n_grid
        self.n_freq = n_freq
        ag = self._basis_np(self.phi)  # [89, F]
        bg = self._basis_np(self.psi)
        # separable least squares: W = pinv(A) E pinv(B)^T minimises |A W B^T - E|_F
        self.coef = np.linalg.pinv(ag) @ self.table @ np.linalg.pinv(bg).T  # [F, F]
        fit = ag @ self.coef @ bg.T
        self.fit_max_error = float(np.abs(fit - self.table).max())
        self.fit_rms_error = float(np.sqrt(((fit - self.table) ** 2).mean()))
        self._coef_t = {}

    # --- basis -------------------------------------------------------------------------------------------------
    def _basis_np(self, a: np.ndarray) -> np.ndarray:
        k = np.arange(1, self.n_freq + 1)
        ka = a[:, None] * k[None, :]
        return np.concatenate([np.ones((a.size, 1)), np.cos(ka), np.sin(ka)], axis=1)

    def _basis(self, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Basis ``[B, F]`` and its derivative in the angle ``[B, F]``."""
        k = torch.arange(1, self.n_freq + 1, dtype=a.dtype)
        ka = a[:, None] * k
        c, s = torch.cos(ka), torch.sin(ka)
        one = torch.ones_like(a)[:, None]
        return torch.cat([one, c, s], 1), torch.cat([torch.zeros_like(one), -k * s, k * c], 1)

    def _w(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._coef_t:
            self._coef_t[dtype] = torch.as_tensor(self.coef, dtype=dtype)
        return self._coef_t[dtype]

    # --- smooth surrogate ----------------------------------------------------------------------------------------
    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self._basis(x[:, 0])
        b, _ = self._basis(x[:, 1])
        return ((a @ self._w(x.dtype)) * b).sum(-1)

    def _energy_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        a, da = self._basis(x[:, 0])
        b, db = self._basis(x[:, 1])
        w = self._w(x.dtype)
        aw = a @ w
        e = (aw * b).sum(-1)
        g = torch.stack([((da @ w) * b).sum(-1), (aw * db).sum(-1)], -1)
        return e, g

    # --- table (scoring) -----------------------------------------------------------------------------------------
    def grid_index(self, x) -> Tuple[np.ndarray, np.ndarray]:
        """Nearest grid indices ``(i_phi, j_psi)`` of angles ``x`` ``[..., 2]`` (wrapped)."""
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        idx = np.rint((wrap_angle(x) + math.pi) / self.spacing).astype(np.int64) % self.n_grid
        return idx[..., 0], idx[..., 1]

    def table_energy(self, x) -> np.ndarray:
        """Table energy at the nearest grid point of ``x`` ``[..., 2]`` (radians, any range: wrapped) -> ``[...]``."""
        i, j = self.grid_index(x)
        return self.table[i, j]

    def score_energy(self, x) -> np.ndarray:
        return self.table_energy(x)


class MuellerBrown(Potential):
    """The Mueller-Brown potential (Mueller & Brown 1979), standard constants, scaled by ``scale`` (energy / kT).

    ``U(x, y) = scale * sum_i A_i exp(a_i (x - x0_i)^2 + b_i (x - x0_i)(y - y0_i) + c_i (y - y0_i)^2)``.
    Minima at (-0.558, 1.442) U=-146.70, (0.623, 0.028) U=-108.17, (-0.050, 0.467) U=-80.77 (scale 1).
    """

    A = (-200.0, -100.0, -170.0, 15.0)
    a = (-1.0, -1.0, -6.5, 0.7)
    b = (0.0, 0.0, 11.0, 0.6)
    c = (-10.0, -10.0, -6.5, 0.7)
    x0 = (1.0, 0.0, -0.5, -1.0)
    y0 = (0.0, 0.5, 1.5, 1.0)
    bounds = ((-1.7, 1.2), (-0.5, 2.2))

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = check_positive(float(scale), "scale")
        self._cache = {}

    def _consts(self, dtype: torch.dtype):
        if dtype not in self._cache:
            self._cache[dtype] = [torch.tensor(v, dtype=dtype) for v in (self.A, self.a, self.b, self.c, self.x0,
                                                                         self.y0)]
        return self._cache[dtype]

    def _terms(self, x: torch.Tensor):
        A, a, b, c, x0, y0 = self._consts(x.dtype)
        dx = x[:, :1] - x0
        dy = x[:, 1:] - y0
        ex = A * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)  # [B, 4]
        return ex, dx, dy, a, b, c

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self._terms(x)[0].sum(-1)

    def _energy_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ex, dx, dy, a, b, c = self._terms(x)
        gx = (ex * (2 * a * dx + b * dy)).sum(-1)
        gy = (ex * (b * dx + 2 * c * dy)).sum(-1)
        return self.scale * ex.sum(-1), self.scale * torch.stack([gx, gy], -1)

    def grid(self, n: int = 200) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energies on an ``n x n`` grid over :attr:`bounds`: ``(xs [n], ys [n], U [n, n])`` with ``U[i, j] = U(xs[i], ys[j])``."""
        xs = np.linspace(*self.bounds[0], n)
        ys = np.linspace(*self.bounds[1], n)
        g = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
        return xs, ys, self.score_energy(g).reshape(n, n)
