"""Exact references: Gaussian mixtures under VE noise, and single-Gaussian closed forms.

For a mixture ``sum_k pi_k N(m_k, C_k)`` in R^n the noised law at noise variance ``tau = sigma^2`` is
``sum_k pi_k N(m_k, C_k + tau I)``, so its score, Hessian, exact denoiser ``E[x0 | x] = x + tau * score`` and posterior
covariance ``Cov[x0 | x] = tau (I + tau H)`` are all available in closed form. Everything here is differentiable in
``x`` and ``sigma`` (used for JVP-based estimators and geodesics), and computed through the eigendecomposition of each
``C_k`` so that singular covariances (data on a subspace) are fine for ``tau > 0``.

Single Gaussian ``N(m, C)`` (REFERENCE.md §2): ``I = tr (C + tau I)^-1``, ``R = dI/dtau = -tr (C + tau I)^-2``,
``mmse = n tau - tau^2 I``, ``mmse' = n - 2 tau I - tau^2 R``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from latentgeo.errors import LatentgeoError, values_readable

__all__ = ["GaussianMixture", "gaussian_fi", "gaussian_fir", "gaussian_mmse", "gaussian_mmse_rate", "gaussian_kl"]

Sigma = Union[float, torch.Tensor]


_readable = values_readable  # one definition, in latentgeo.errors


def _tau_of(sigma: Sigma, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Noise variance per sample, shape [B]."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(batch)
    s = s.reshape(-1)
    if s.shape[0] != batch:
        raise LatentgeoError(f"sigma has {s.shape[0]} entries but the batch has {batch}; pass sigma of shape [B] or a scalar")
    if _readable(s) and not bool((torch.isfinite(s) & (s >= 0)).all()):
        raise LatentgeoError(f"sigma must be finite and >= 0 (a noise standard deviation), got "
                             f"{s.detach().reshape(-1)[:4].tolist()}; pass noise levels sigma >= 0")
    return s * s


# Relative tolerances of the covariance checks: asymmetry |C - C^T| and negative eigenvalues are accepted as
# round-off up to these fractions of the component's largest |entry| / |eigenvalue| (PSD is required, not PD:
# singular covariances, i.e. data on a subspace, are supported for sigma > 0).
_SYM_TOL = 1e-6


def _psd_tol(dtype: torch.dtype) -> float:
    """sqrt(eps) of the dtype the covariance was given in (1.5e-8 for float64, 3.5e-4 for float32)."""
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps) ** 0.5


def _validate(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> None:
    """One-line errors for non-finite / negative weights, non-finite means and non-symmetric covariances."""
    if not bool(torch.isfinite(weights).all()):
        raise LatentgeoError(f"mixture weights contain NaN or inf ({weights.tolist()[:8]}); pass finite weights")
    if bool((weights < 0).any()) or not bool(weights.sum() > 0):
        raise LatentgeoError(f"mixture weights must be non-negative with a positive sum, got {weights.tolist()[:8]}; "
                             "pass weights >= 0 (they are normalised)")
    bad = (~torch.isfinite(means)).reshape(means.shape[0], -1).any(1)
    if bool(bad.any()):
        raise LatentgeoError(f"mixture means contain NaN or inf (component {int(bad.nonzero()[0])}); pass finite means")
    bad = (~torch.isfinite(covs)).reshape(covs.shape[0], -1).any(1)
    if bool(bad.any()):
        raise LatentgeoError(f"mixture covariance of component {int(bad.nonzero()[0])} contains NaN or inf; pass "
                             "finite covariances")
    scale = covs.abs().amax((-1, -2))
    asym = (covs - covs.transpose(-1, -2)).abs().amax((-1, -2))
    bad = asym > _SYM_TOL * scale
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise LatentgeoError(f"mixture covariance of component {k} is not symmetric (max |C - C^T| = "
                             f"{float(asym[k]):.3g}); pass symmetric covariances, e.g. 0.5 * (C + C.T)")


def _check_psd(evals: torch.Tensor, tol: float, what: str = "mixture covariance of component") -> None:
    """Refuse covariances ([K, n] eigenvalues) with an eigenvalue below round-off (negative-definite or indefinite)."""
    lo = evals.amin(-1).reshape(-1)
    top = evals.abs().amax(-1).reshape(-1).clamp_min(torch.finfo(evals.dtype).tiny)
    bad = lo < -tol * top
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        name = f"{what} {k}" if what.endswith("component") else what
        raise LatentgeoError(f"{name} is not positive semi-definite (smallest eigenvalue {float(lo[k]):.3g}); pass "
                             "a symmetric PSD covariance, e.g. A @ A.T")


class GaussianMixture:
    """A Gaussian mixture ``sum_k weights_k N(means_k, covs_k)`` and its exact VE-noised quantities.

    Args:
        weights: [K] finite, non-negative with a positive sum, normalised here.
        means: [K, n] finite.
        covs: [K, n, n] finite, symmetric positive semi-definite (or [K, n] diagonals, or [n, n] / [n] shared);
            singular is fine (data on a subspace, for sigma > 0). Each violation is a one-line
            :class:`LatentgeoError` naming the component.
    Shapes of methods: ``x`` is [B, n]; ``sigma`` is a float or [B].
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.double()
        if means.ndim == 1:
            means = means[None]
        K, n = means.shape
        weights = torch.as_tensor(weights, dtype=means.dtype).reshape(-1)
        covs = torch.as_tensor(covs)
        tol = _psd_tol(covs.dtype)
        covs = covs.to(means.dtype)
        ambiguous = covs.ndim == 2 and covs.shape == (K, n) and K == n and K > 1  # [K, n] diagonals or [n, n]?
        if covs.ndim == 1:
            covs = torch.diag(covs)
        if covs.ndim == 2 and covs.shape == (K, n) and K != n:
            covs = torch.diag_embed(covs)  # per-component diagonals
        elif covs.ndim == 2:
            covs = covs.expand(K, n, n)  # one shared full covariance
        if covs.shape != (K, n, n) or weights.shape[0] != K:
            raise LatentgeoError(f"mixture shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                                 f"covs {tuple(covs.shape)}; expected [K], [K, n], [K, n, n]")
        if ambiguous and bool((covs[0] - covs[0].T).abs().amax() > _SYM_TOL * covs[0].abs().amax()):
            raise LatentgeoError(f"covs of shape [{K}, {n}] with K = n = {n} is read as one shared [n, n] "
                                 "covariance, and it is not symmetric; for per-component diagonals pass "
                                 "torch.diag_embed(covs) ([K, n, n])")
        _validate(weights, means, covs)
        self.weights = weights / weights.sum()
        self.means = means
        self.covs = 0.5 * (covs + covs.transpose(-1, -2))
        evals, evecs = torch.linalg.eigh(self.covs)
        _check_psd(evals, tol)
        self._evals = evals.clamp_min(0.0)  # [K, n]; only round-off below zero remains (checked above)
        self._evecs = evecs  # [K, n, n], columns are eigenvectors
        self._cache: Dict[Tuple, Tuple[torch.Tensor, ...]] = {}

    # ------------------------------------------------------------------ basics
    @property
    def n(self) -> int:
        return self.means.shape[1]

    @property
    def K(self) -> int:
        return self.means.shape[0]

    def _params(self, like: torch.Tensor):
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = tuple(t.to(dtype=like.dtype, device=like.device)
                                     for t in (self.weights, self.means, self._evals, self._evecs))
        return self._cache[key]

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        m = self.mean()
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def sample(self, m: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw ``m`` samples, shape [m, n]."""
        k = torch.multinomial(self.weights.float(), m, replacement=True, generator=generator)
        eps = torch.randn(m, self.n, generator=generator, dtype=self.means.dtype)
        scale = self._evecs[k] * self._evals[k].sqrt()[:, None, :]
        return self.means[k] + (scale @ eps[:, :, None])[:, :, 0]

    def noised(self, tau: float) -> "GaussianMixture":
        """The law of ``x0 + sqrt(tau) n``."""
        eye = torch.eye(self.n, dtype=self.covs.dtype)
        return GaussianMixture(self.weights, self.means, self.covs + tau * eye)

    # ------------------------------------------------------------------ noised density and derivatives
    def _parts(self, x: torch.Tensor, sigma: Sigma):
        if x.ndim != 2 or x.shape[1] != self.n:
            raise LatentgeoError(f"x has shape {tuple(x.shape)} but the mixture lives in R^{self.n}; pass [B, {self.n}]")
        if _readable(x) and not bool(torch.isfinite(x).all()):
            raise LatentgeoError("x contains NaN or inf values; pass finite points to the mixture oracle")
        w, m, lam, U = self._params(x)
        tau = _tau_of(sigma, x.shape[0], x)  # [B]
        diff = x[:, None, :] - m[None]  # [B, K, n]
        y = torch.einsum("kji,bkj->bki", U, diff)  # coordinates in each component's eigenbasis
        var = lam[None] + tau[:, None, None]  # [B, K, n]
        if (var <= 0).any():
            raise LatentgeoError("a mixture component is singular at sigma = 0; use sigma > 0")
        inv = 1.0 / var
        quad = (y * y * inv).sum(-1)
        logdet = torch.log(var).sum(-1)
        logn = -0.5 * (quad + logdet + self.n * math.log(2 * math.pi))  # [B, K]
        logw = torch.log(w)[None] + logn
        resp = torch.softmax(logw, dim=1)
        g = -torch.einsum("kij,bkj->bki", U, inv * y)  # per-component score -S^-1 (x - m)  [B, K, n]
        return resp, g, inv, U, logw, tau

    def log_prob(self, x: torch.Tensor, sigma: Sigma = 0.0) -> torch.Tensor:
        """log p_tau(x), shape [B]."""
        resp, g, inv, U, logw, tau = self._parts(x, sigma)
        return torch.logsumexp(logw, dim=1)

    def score(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """grad_x log p_tau(x), shape [B, n]."""
        resp, g, *_ = self._parts(x, sigma)
        return (resp[:, :, None] * g).sum(1)

    def denoiser(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """E[x0 | x] = x + tau * score, shape [B, n]."""
        resp, g, inv, U, logw, tau = self._parts(x, sigma)
        return x + tau[:, None] * (resp[:, :, None] * g).sum(1)

    def hessian(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """grad_x^2 log p_tau(x), shape [B, n, n]."""
        resp, g, inv, U, logw, tau = self._parts(x, sigma)
        s = (resp[:, :, None] * g).sum(1)
        S_inv = torch.einsum("kij,bkj,klj->bkil", U, inv, U)  # [B, K, n, n]
        second = torch.einsum("bk,bkij->bij", resp, g[:, :, :, None] * g[:, :, None, :] - S_inv)
        return second - s[:, :, None] * s[:, None, :]

    def posterior_cov(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """Cov[x0 | x] = tau (I + tau H), shape [B, n, n]."""
        tau = _tau_of(sigma, x.shape[0], x)
        eye = torch.eye(self.n, dtype=x.dtype, device=x.device)
        return tau[:, None, None] * (eye + tau[:, None, None] * self.hessian(x, sigma))

    def as_denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact denoiser as a callable ``D(x, sigma)`` accepting ``x`` of shape [B, ...] with prod(...) = n."""

        def D(x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
            shape = x.shape
            return self.denoiser(x.reshape(shape[0], -1), sigma).reshape(shape)

        D.mixture = self  # type: ignore[attr-defined]
        return D

    # ------------------------------------------------------------------ Monte-Carlo references with exact derivatives
    def fisher_reference(self, sigma: float, m: int = 4096, generator: Optional[torch.Generator] = None,
                         x0: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None) -> Dict[str, float]:
        """MC over noised samples of the exact FI, FIR, MMSE and MMSE rate (exact score/Hessian at each sample).

        Pass ``x0``/``noise`` to share samples with an estimator (common random numbers).
        """
        if x0 is None:
            x0 = self.sample(m, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x = x0 + sigma * noise
        s = self.score(x, sigma)
        H = self.hessian(x, sigma)
        tau = sigma * sigma
        eye = torch.eye(self.n, dtype=x.dtype)
        J = eye + tau * H
        D = x + tau * s
        return {
            "fi": float((s * s).sum(-1).mean()),
            "fi_trace": float(-torch.diagonal(H, dim1=-2, dim2=-1).sum(-1).mean()),
            "fir": float(-(H * H).sum((-1, -2)).mean()),
            "mmse": float(((D - x0) ** 2).sum(-1).mean()),
            "mmse_rate": float((J * J).sum((-1, -2)).mean()),
        }


# ---------------------------------------------------------------------- single Gaussian closed forms

def _evals(cov: torch.Tensor) -> torch.Tensor:
    cov = torch.as_tensor(cov)
    if not cov.is_floating_point():
        cov = cov.double()
    tol = _psd_tol(cov.dtype)
    if not bool(torch.isfinite(cov).all()):
        raise LatentgeoError("the covariance contains NaN or inf; pass a finite covariance")
    if cov.ndim == 1:
        _check_psd(cov[None], tol, "the covariance (diagonal)")
        return cov.clamp_min(0.0)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise LatentgeoError(f"the covariance has shape {tuple(cov.shape)}; pass [n, n] or its diagonal [n]")
    if float((cov - cov.T).abs().max()) > _SYM_TOL * float(cov.abs().max()):
        raise LatentgeoError("the covariance is not symmetric; pass a symmetric one, e.g. 0.5 * (C + C.T)")
    lam = torch.linalg.eigvalsh(0.5 * (cov + cov.T))
    _check_psd(lam[None], tol, "the covariance")
    return lam.clamp_min(0.0)  # only round-off below zero remains (checked above)


def gaussian_fi(cov: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Fisher information ``tr (C + tau I)^-1`` of ``N(m, C) * N(0, tau I)`` (``cov`` [n, n] or its diagonal [n])."""
    lam = _evals(cov)
    tau = torch.as_tensor(tau, dtype=lam.dtype)
    return (1.0 / (lam + tau[..., None])).sum(-1)


def gaussian_fir(cov: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Fisher information rate ``dI/dtau = -tr (C + tau I)^-2``."""
    lam = _evals(cov)
    tau = torch.as_tensor(tau, dtype=lam.dtype)
    return -(1.0 / (lam + tau[..., None]) ** 2).sum(-1)


def gaussian_mmse(cov: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """MMSE ``E|x0 - E[x0|x]|^2 = tr(tau C (C + tau I)^-1) = n tau - tau^2 I``."""
    lam = _evals(cov)
    tau = torch.as_tensor(tau, dtype=lam.dtype)
    return (tau[..., None] * lam / (lam + tau[..., None])).sum(-1)


def gaussian_mmse_rate(cov: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """d mmse / d tau ``= tr (C (C + tau I)^-1)^2 = E|J_D|_F^2``."""
    lam = _evals(cov)
    tau = torch.as_tensor(tau, dtype=lam.dtype)
    return ((lam / (lam + tau[..., None])) ** 2).sum(-1)


def gaussian_kl(m0: torch.Tensor, C0: torch.Tensor, m1: torch.Tensor, C1: torch.Tensor) -> torch.Tensor:
    """KL( N(m0, C0) || N(m1, C1) ) for full covariances (batched over leading dims)."""
    n = m0.shape[-1]
    L1 = torch.linalg.cholesky(C1)
    d = (m1 - m0)[..., None]
    sol_d = torch.cholesky_solve(d, L1)
    tr = torch.diagonal(torch.cholesky_solve(C0, L1), dim1=-2, dim2=-1).sum(-1)
    maha = (d * sol_d).sum((-1, -2))
    logdet1 = 2 * torch.log(torch.diagonal(L1, dim1=-2, dim2=-1)).sum(-1)
    logdet0 = torch.linalg.slogdet(C0)[1]
    return 0.5 * (tr + maha - n + logdet1 - logdet0)
