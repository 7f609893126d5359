"""The denoising posteriors ``p(x0 | x, sigma)`` as an exponential family, and simulation-free curve energy/length.

REFERENCE.md §3 (Karczewski et al., ICLR 2026). In VE form
``p(x0 | x) ∝ p(x0) exp(x.x0/sigma^2 - |x0|^2/(2 sigma^2))``,
an exponential family in ``x0`` with

- sufficient statistic ``T(x0) = (x0, |x0|^2)``,
- natural parameter ``eta(x, sigma) = (x / sigma^2, -1 / (2 sigma^2))``,
- expectation parameter ``mu(x, sigma) = (D, sigma^2 div_x D + |D|^2)`` with ``D = E[x0|x]``
  (because ``Cov[x0|x] = sigma^2 dD/dx``, so ``E|x0|^2 = tr Cov + |D|^2``).

For two members, ``(eta_1 - eta_0) . (mu_1 - mu_0) = KL(p_0||p_1) + KL(p_1||p_0)`` exactly, so a discretised curve
``z_0..z_{N-1}`` (uniform in its parameter s in [0, 1]) has

    energy  E ~ (N-1)/2 * sum_n (eta_{n+1} - eta_n) . (mu_{n+1} - mu_n)
    length  L ~ sum_n sqrt((eta_{n+1} - eta_n) . (mu_{n+1} - mu_n))

with no simulation and no log-partition function.

Conventions: ``x`` is [B, ...] and ``sigma`` is [B] (a float is broadcast). ``eta`` and ``mu`` are returned as pairs
``(vector part [B, ...], scalar part [B])``. Curves are ``xs`` [N, ...] with ``sigmas`` [N]; batched curves are
``xs`` [P, N, ...] with ``sigmas`` [P, N] (P independent curves).

Divergences use vector-Jacobian products (one batched forward + one backward for all probes at once); they are
differentiable in ``x``, ``sigma`` (and the denoiser's parameters) when the inputs require gradients, which is what the
geodesic optimisation needs (a double backward through the denoiser). The denoiser must treat batch rows independently
(no train-mode batch norm).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Tuple, Union

import torch

from latentgeo.autodiff import math_attention
from latentgeo.errors import LatentgeoError, values_readable

__all__ = ["eta", "mu", "divergence", "rademacher_probes", "segment_terms", "segment_components", "objective_terms",
           "OBJECTIVES", "curve_energy", "curve_length", "kl_from_state", "lambda_of_sigma", "sigma_of_lambda"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Pair = Tuple[torch.Tensor, torch.Tensor]


def lambda_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Log-SNR ``lambda = -2 log sigma`` (the time coordinate of geodesics)."""
    return -2.0 * torch.log(sigma)


def sigma_of_lambda(lam: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`lambda_of_sigma`: ``sigma = exp(-lambda / 2)``."""
    return torch.exp(-0.5 * lam)


_readable = values_readable  # one definition, in latentgeo.errors


def _fmt_sigmas(s: torch.Tensor, limit: int = 4) -> str:
    v = sorted(set(float(t) for t in s.detach().reshape(-1).cpu().tolist()))
    shown = ", ".join(f"{t:.4g}" for t in v[:limit])
    return shown + (f", ... ({len(v)} values)" if len(v) > limit else "")


def _check_sigma(s: torch.Tensor, name: str = "sigma") -> None:
    """Every sigma finite and > 0: the family is indexed by sigma > 0 (eta = x / sigma^2 blows up at 0)."""
    if not _readable(s):
        return
    bad = ~(torch.isfinite(s) & (s > 0))
    if bool(bad.any()):
        if name != "sigma":
            raise LatentgeoError(f"{name} must be finite and > 0, got {_fmt_sigmas(s[bad])} (the posterior family "
                                 "degenerates at sigma = 0); use a small positive value such as 0.01")
        raise LatentgeoError(f"sigma must be > 0 at every curve point; got sigma = {_fmt_sigmas(s[bad])} at "
                             f"{int(bad.sum())} of {s.numel()} points (the posterior family degenerates at "
                             "sigma = 0); keep every point at sigma >= a small sigma_min such as 0.01")


def _check_points(x: torch.Tensor, name: str = "x") -> None:
    if _readable(x) and not bool(torch.isfinite(x).all()):
        raise LatentgeoError(f"{name} contains NaN or inf values; pass finite spacetime points")


def _check_denoised(D: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> None:
    """Name the sigma where the denoiser (or its divergence) is NaN/inf instead of passing NaN on."""
    if not (_readable(D) and _readable(q)):
        return
    badD = ~torch.isfinite(D.detach()).reshape(D.shape[0], -1).all(1)
    if bool(badD.any()):
        raise LatentgeoError(f"the denoiser returned NaN/inf at sigma = {_fmt_sigmas(s[badD])} "
                             f"({int(badD.sum())} of {D.shape[0]} points); check it at that noise level (or keep the "
                             "curve away from it, e.g. a larger sigma_min)")
    badq = ~torch.isfinite(q.detach()).all(0)
    if bool(badq.any()):
        raise LatentgeoError(f"the denoiser's Jacobian (divergence) is NaN/inf at sigma = {_fmt_sigmas(s[badq])} "
                             f"({int(badq.sum())} of {q.shape[1]} points) although its output is finite; check its "
                             "gradient at that noise level")


def _sigma_vec(sigma: Union[float, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.ndim != 1 or s.shape[0] != x.shape[0]:
        raise LatentgeoError(f"sigma has shape {tuple(s.shape)} but x has batch {x.shape[0]}; "
                             "pass sigma of shape [B] or a scalar")
    _check_sigma(s)
    return s


def _n_probes(n_probes) -> Optional[int]:
    if n_probes is None:
        return None
    try:
        ok = not isinstance(n_probes, bool) and float(n_probes) == int(n_probes)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise LatentgeoError(f"n_probes must be a positive integer or None (exact divergence), got {n_probes!r}; "
                             "pass e.g. n_probes=1, or None")
    if int(n_probes) < 1:
        raise LatentgeoError(f"n_probes must be >= 1 or None (exact divergence), got {n_probes}; "
                             "pass e.g. n_probes=1, or None")
    return int(n_probes)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a [B] vector so that it broadcasts against [B, ...]."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def eta(x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> Pair:
    """Natural parameter of ``p(x0 | x, sigma)``: ``(x / sigma^2 [B, ...], -1/(2 sigma^2) [B])``.

    Every sigma must be finite and > 0 and ``x`` finite (a one-line :class:`LatentgeoError` otherwise): at
    sigma = 0 the natural parameter is infinite (the posterior is a point mass), not a limit one can return.
    """
    _check_points(x)
    s = _sigma_vec(sigma, x)
    inv = 1.0 / (s * s)
    return x * _bcast(inv, x), -0.5 * inv


def rademacher_probes(n_probes: int, shape: torch.Size, dtype: torch.dtype, device: torch.device,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Rademacher (+-1) probes of shape [n_probes, *shape] (drawn on the generator's device, then moved)."""
    gdev = generator.device if generator is not None else device
    v = torch.randint(0, 2, (n_probes, *shape), generator=generator, device=gdev)
    return (2 * v - 1).to(dtype=dtype, device=device)


_BASIS_CACHE: dict = {}
_EXACT_MAX_DIM = 1024


def _basis_probes(x: torch.Tensor) -> torch.Tensor:
    """Coordinate basis as probes: [n, B, ...] with probe i = e_i for every row (exact trace by summation).

    Cached per (shape, dtype, device): geodesic steps reuse the same tensor instead of rebuilding it.
    """
    if x[0].numel() > _EXACT_MAX_DIM:
        raise LatentgeoError(f"the exact divergence replicates the batch once per dimension ({x[0].numel()}); "
                             f"above {_EXACT_MAX_DIM} use Hutchinson probes, e.g. n_probes=1")
    key = (tuple(x.shape), x.dtype, x.device)
    v = _BASIS_CACHE.get(key)
    if v is None:
        B = x.shape[0]
        n = x[0].numel()
        eye = torch.eye(n, dtype=x.dtype, device=x.device)  # [n, n]
        v = eye[:, None, :].expand(n, B, n).reshape(n, *x.shape)
        if len(_BASIS_CACHE) > 32:
            _BASIS_CACHE.clear()
        _BASIS_CACHE[key] = v
    return v


def _denoise_and_quad(denoiser: Denoiser, x: torch.Tensor, s: torch.Tensor, probes: torch.Tensor,
                      create_graph: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``D(x, s)`` [B, ...] and the quadratic forms ``v^T (dD/dx) v`` [M, B] for probes [M, B, ...].

    One forward pass on the M-fold replicated batch and one vector-Jacobian product give all M*B quadratic forms;
    ``D`` is read off the first replica, so no extra forward pass is spent on it. With ``create_graph`` the forward
    pass runs under :func:`latentgeo.autodiff.math_attention` (double backward through attention).
    """
    M, B = probes.shape[0], x.shape[0]
    with torch.enable_grad():
        xr = x.unsqueeze(0).expand(M, *x.shape).reshape(M * B, *x.shape[1:])
        if not xr.requires_grad:
            xr = xr.detach().requires_grad_(True)
        sr = s.repeat(M)
        # a graph that will be differentiated again (geodesic gradients) needs attention in its math form: the
        # fused kernels' backward has no derivative; without attention this changes nothing
        with math_attention() if create_graph else contextlib.nullcontext():
            out = denoiser(xr, sr)
        if out.shape != xr.shape:
            raise LatentgeoError(f"the denoiser returned shape {tuple(out.shape)} for input {tuple(xr.shape)}; "
                                 "it must return E[x0|x] with the shape of x")
        if not out.requires_grad:
            if _readable(out) and not bool(torch.isfinite(out).all()):
                _check_denoised(out[:B], torch.zeros(1, B, dtype=out.dtype, device=out.device), s)
            raise LatentgeoError("the denoiser's output does not depend differentiably on x (it was detached, "
                                 "computed under no_grad or outside torch); spacetime quantities need dD/dx, so make "
                                 "D a differentiable torch function of x")
        v = probes.reshape(xr.shape)
        (g,) = torch.autograd.grad(out, xr, grad_outputs=v, create_graph=create_graph)
    q = (g * v).reshape(M, B, -1).sum(-1)
    D = out[:B]
    if not create_graph:
        D, q = D.detach(), q.detach()
    return D, q


def _needs_graph(*ts: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def divergence(denoiser: Denoiser, x: torch.Tensor, sigma: Union[float, torch.Tensor],
               n_probes: Optional[int] = 1, generator: Optional[torch.Generator] = None,
               probes: Optional[torch.Tensor] = None, return_samples: bool = False,
               create_graph: Optional[bool] = None):
    """``div_x D(x, sigma)`` per row, shape [B].

    ``n_probes=None`` sums over the coordinate basis (exact; costs ``n`` replicas of the batch, for small ``n``);
    an integer uses that many Rademacher probes (Hutchinson, unbiased). ``probes`` [M, B, ...] overrides both.
    ``return_samples=True`` returns ``(div [B], per-probe values [M, B])`` (for standard errors).
    """
    _check_points(x)
    s = _sigma_vec(sigma, x)
    if create_graph is None:
        create_graph = _needs_graph(x, s)
    exact = probes is None and n_probes is None
    if probes is None:
        probes = _basis_probes(x) if exact else rademacher_probes(_n_probes(n_probes), x.shape, x.dtype, x.device,
                                                                  generator)
    D, q = _denoise_and_quad(denoiser, x, s, probes, create_graph)
    _check_denoised(D, q, s)
    div = q.sum(0) if exact else q.mean(0)
    return (div, q) if return_samples else div


def mu(denoiser: Denoiser, x: torch.Tensor, sigma: Union[float, torch.Tensor], n_probes: Optional[int] = 1,
       generator: Optional[torch.Generator] = None, probes: Optional[torch.Tensor] = None,
       create_graph: Optional[bool] = None) -> Pair:
    """Expectation parameter ``(D [B, ...], sigma^2 div D + |D|^2 [B])`` of ``p(x0 | x, sigma)``.

    Args:
        denoiser: ``D(x, sigma) -> E[x0|x]``.
        x: [B, ...] noisy points; sigma: [B] or a float (noise std).
        n_probes: ``None`` for the exact divergence (loop-free sum over the coordinate basis, small dimensions);
            an integer for Hutchinson with that many Rademacher probes per row.
        generator: RNG for the probes.
        probes: explicit probes [M, B, ...] (averaged), e.g. shared along a curve to reduce variance.
        create_graph: keep the graph for differentiating ``mu`` (default: when ``x`` or ``sigma`` requires grad).
    """
    _check_points(x)
    s = _sigma_vec(sigma, x)
    if create_graph is None:
        create_graph = _needs_graph(x, s)
    exact = probes is None and n_probes is None
    if probes is None:
        if exact:
            probes = _basis_probes(x)
        else:
            probes = rademacher_probes(_n_probes(n_probes), x.shape, x.dtype, x.device, generator)
    D, q = _denoise_and_quad(denoiser, x, s, probes, create_graph)
    _check_denoised(D, q, s)
    div = q.sum(0) if exact else q.mean(0)
    sq = (D * D).reshape(D.shape[0], -1).sum(-1)
    return D, s * s * div + sq


# ---------------------------------------------------------------------- curves

def _curve_shapes(xs: torch.Tensor, sigmas: torch.Tensor, batched: Optional[bool] = None):
    """Normalise a curve to [P, N, ...] / [P, N]; returns (xs, sigmas, was_batched)."""
    sigmas = torch.as_tensor(sigmas, dtype=xs.dtype, device=xs.device)
    if batched is None:
        batched = sigmas.ndim == 2
    if not batched:
        if sigmas.ndim != 1 or xs.shape[0] != sigmas.shape[0]:
            raise LatentgeoError(f"a curve needs xs [N, ...] and sigmas [N]; got {tuple(xs.shape)} and "
                                 f"{tuple(sigmas.shape)}")
        xs, sigmas = xs.unsqueeze(0), sigmas.unsqueeze(0)
    if sigmas.ndim != 2 or xs.shape[:2] != sigmas.shape:
        raise LatentgeoError(f"batched curves need xs [P, N, ...] and sigmas [P, N]; got {tuple(xs.shape)} and "
                             f"{tuple(sigmas.shape)}")
    if xs.shape[1] < 2:
        raise LatentgeoError("a curve needs at least 2 points; pass n_points >= 2")
    return xs, sigmas, batched


def _shared_probes(n_probes: Optional[int], xs: torch.Tensor, generator: Optional[torch.Generator]):
    """Probes [M, P*N, ...]: the same Rademacher vectors at every point of a curve (common random numbers).

    Sharing keeps each segment's estimate unbiased while the noise of neighbouring points cancels in the
    differences, so a constant curve has exactly zero energy and short segments are not swamped by probe noise.
    """
    n_probes = _n_probes(n_probes)
    if n_probes is None:
        return None
    P, N = xs.shape[:2]
    v = rademacher_probes(int(n_probes), (P, 1, *xs.shape[2:]), xs.dtype, xs.device, generator)
    return v.expand(int(n_probes), P, N, *xs.shape[2:]).reshape(int(n_probes), P * N, *xs.shape[2:])


def _curve_mu(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, n_probes: Optional[int],
              generator: Optional[torch.Generator], shared_probes: bool, chunk_size: Optional[int] = None):
    """mu at all points of [P, N, ...] curves, evaluated in chunks of rows; returns ([P, N, ...], [P, N])."""
    P, N = xs.shape[:2]
    xf, sf = xs.reshape(P * N, *xs.shape[2:]), sigmas.reshape(P * N)
    probes = _shared_probes(n_probes, xs, generator) if shared_probes else None
    chunk = P * N if not chunk_size else int(chunk_size)
    mx, ms = [], []
    for i in range(0, P * N, chunk):
        pr = None if probes is None else probes[:, i:i + chunk]
        a, b = mu(denoiser, xf[i:i + chunk], sf[i:i + chunk], n_probes=n_probes, generator=generator, probes=pr)
        mx.append(a)
        ms.append(b)
    return torch.cat(mx).reshape(xs.shape), torch.cat(ms).reshape(P, N)


def _segment_dots(ex, es, mx, ms):
    """(eta_{n+1}-eta_n).(mu_{n+1}-mu_n) for [P, N, ...] / [P, N] parts -> [P, N-1]."""
    P, N = es.shape
    dx = ((ex[:, 1:] - ex[:, :-1]) * (mx[:, 1:] - mx[:, :-1])).reshape(P, N - 1, -1).sum(-1)
    return dx + (es[:, 1:] - es[:, :-1]) * (ms[:, 1:] - ms[:, :-1])


def _segment_parts(ex, es, mx, ms):
    """Per-component products of the differences for [P, N, ...] / [P, N] parts: ``(x part [P, N-1, n], scalar part
    [P, N-1])``, with ``x part.sum(-1) + scalar part`` bitwise equal to :func:`_segment_dots`."""
    P, N = es.shape
    cx = ((ex[:, 1:] - ex[:, :-1]) * (mx[:, 1:] - mx[:, :-1])).reshape(P, N - 1, -1)
    return cx, (es[:, 1:] - es[:, :-1]) * (ms[:, 1:] - ms[:, :-1])


def segment_components(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, n_probes: Optional[int] = 1,
                       generator: Optional[torch.Generator] = None, shared_probes: bool = True,
                       chunk_size: Optional[int] = None) -> torch.Tensor:
    """The terms of each segment's dot product, one per coordinate of the sufficient statistic ``T = (x0, |x0|^2)``:
    ``(eta_{n+1} - eta_n)_k (mu_{n+1} - mu_n)_k``, the data coordinates k = 0..n-1 (flattened) then the scalar one.

    Shapes: ``xs`` [N, ...], ``sigmas`` [N] -> [N-1, n+1]; batched [P, N, ...] -> [P, N-1, n+1]. Summed over the
    last axis they give :func:`segment_terms` (bitwise: the same additions in the same order). Their sum is a
    symmetrised KL (>= 0) for a true posterior mean, but single components can be negative even then (the metric's
    off-diagonal blocks): they are what ``objective="relu"`` clamps.
    """
    xs3, s2, batched = _curve_shapes(xs, sigmas)
    ex, es = eta(xs3.reshape(-1, *xs3.shape[2:]), s2.reshape(-1))
    ex, es = ex.reshape(xs3.shape), es.reshape(s2.shape)
    mx, ms = _curve_mu(denoiser, xs3, s2, n_probes, generator, shared_probes, chunk_size)
    cx, cs = _segment_parts(ex, es, mx, ms)
    c = torch.cat([cx, cs[..., None]], -1)
    if _readable(c) and not bool(torch.isfinite(c).all()):
        raise LatentgeoError("a segment term (eta_{n+1} - eta_n).(mu_{n+1} - mu_n) overflowed to inf/NaN although "
                             "eta and mu are finite; use float64 or keep the curve at moderate sigma and |x|")
    return c if batched else c[0]


#: Per-segment objectives a geodesic can minimise (see :func:`objective_terms`).
OBJECTIVES = ("abs", "relu", "signed")


def _check_objective(objective: str) -> str:
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise LatentgeoError(f"objective must be one of {', '.join(repr(o) for o in OBJECTIVES)}, got {objective!r}; "
                             "pass one of those")
    return objective


def objective_terms(components: torch.Tensor, objective: str) -> torch.Tensor:
    """Per-segment objective [..., N-1] from :func:`segment_components` [..., N-1, n+1].

    - ``"abs"``: ``|d_n|`` with ``d_n = sum_k c_nk`` (latentgeo's robust objective);
    - ``"relu"``: ``sum_k max(c_nk, 0)``, every component clamped at zero (the form of the authors' code);
    - ``"signed"``: ``d_n`` (the plain discretised energy; unbounded below for a denoiser whose Jacobian is not
      symmetric PSD).

    All three equal ``d_n`` when every component is >= 0; ``"abs"`` and ``"signed"`` also whenever ``d_n >= 0``
    (every segment of a true posterior mean), ``"relu"`` only when no single component is negative.
    """
    _check_objective(objective)
    d = components[..., :-1].sum(-1) + components[..., -1]
    if objective == "abs":
        return d.abs()
    if objective == "relu":
        return components.clamp(min=0).sum(-1)
    return d


def segment_terms(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, n_probes: Optional[int] = 1,
                  generator: Optional[torch.Generator] = None, shared_probes: bool = True,
                  chunk_size: Optional[int] = None) -> torch.Tensor:
    """Per-segment ``(eta_{n+1}-eta_n).(mu_{n+1}-mu_n)`` = symmetrised KL between neighbours.

    Shapes: ``xs`` [N, ...], ``sigmas`` [N] -> [N-1]; batched ``xs`` [P, N, ...], ``sigmas`` [P, N] -> [P, N-1].
    """
    xs3, s2, batched = _curve_shapes(xs, sigmas)
    ex, es = eta(xs3.reshape(-1, *xs3.shape[2:]), s2.reshape(-1))
    ex, es = ex.reshape(xs3.shape), es.reshape(s2.shape)
    mx, ms = _curve_mu(denoiser, xs3, s2, n_probes, generator, shared_probes, chunk_size)
    d = _segment_dots(ex, es, mx, ms)
    if _readable(d) and not bool(torch.isfinite(d).all()):
        raise LatentgeoError("a segment term (eta_{n+1} - eta_n).(mu_{n+1} - mu_n) overflowed to inf/NaN although "
                             "eta and mu are finite; use float64 or keep the curve at moderate sigma and |x|")
    return d if batched else d[0]


def curve_energy(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, n_probes: Optional[int] = 1,
                 generator: Optional[torch.Generator] = None, shared_probes: bool = True,
                 chunk_size: Optional[int] = None) -> torch.Tensor:
    """Discretised Fisher-Rao energy ``(N-1)/2 sum_n (eta_{n+1}-eta_n).(mu_{n+1}-mu_n)``.

    The curve is taken as uniformly parametrised on s in [0, 1]. Returns a scalar ([P] for batched curves).
    Differentiable in ``xs`` and ``sigmas``.
    """
    d = segment_terms(denoiser, xs, sigmas, n_probes, generator, shared_probes, chunk_size)
    return 0.5 * (d.shape[-1]) * d.sum(-1)


def curve_length(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, n_probes: Optional[int] = 1,
                 generator: Optional[torch.Generator] = None, shared_probes: bool = True,
                 chunk_size: Optional[int] = None) -> torch.Tensor:
    """Discretised Fisher-Rao length ``sum_n sqrt((eta_{n+1}-eta_n).(mu_{n+1}-mu_n))`` (parametrisation-free).

    Each term is a symmetrised KL (>= 0) for a true posterior mean; a negative estimate (Hutchinson noise, or a
    trained denoiser that is not a valid posterior mean there) enters as ``sqrt|d_n|``, i.e. it is counted as
    distance rather than dropped. Scalar, or [P] when batched.
    """
    d = segment_terms(denoiser, xs, sigmas, n_probes, generator, shared_probes, chunk_size)
    return d.abs().sqrt().sum(-1)


def kl_from_state(denoiser: Denoiser, x_star: torch.Tensor, sigma_star: float, xs: torch.Tensor,
                  sigmas: torch.Tensor, n_bridge: int = 64, n_probes: Optional[int] = 1,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``KL(p_{z*} || p_{gamma_n})`` for every point of a curve, without the log-partition function.

    Along any path u -> gamma_u, ``d/du KL(z*||gamma_u) = (d eta/du) . (mu(gamma_u) - mu(z*))`` (REFERENCE.md §3).
    Integrating (trapezoid) first along a straight bridge in (log-SNR, x) from ``z*`` (where the KL is 0) to the
    curve's first point, then along the curve, gives absolute values. Accuracy is that of the trapezoid rule
    (refine ``n_bridge`` / the curve's points).

    Shapes: ``x_star`` [...] (one point), ``xs`` [N, ...], ``sigmas`` [N] -> [N]; batched [P, N, ...] -> [P, N].
    Differentiable in ``xs``/``sigmas`` (usable inside a geodesic penalty).
    """
    xs3, s2, batched = _curve_shapes(xs, sigmas)
    P, N = s2.shape
    if int(n_bridge) < 2:
        raise LatentgeoError(f"n_bridge must be >= 2 (the bridge from z* to the curve needs both ends), got "
                             f"{n_bridge}; pass n_bridge=2 or more")
    n_bridge = int(n_bridge)
    xstar = torch.as_tensor(x_star, dtype=xs3.dtype, device=xs3.device)
    if xstar.numel() != xs3[0, 0].numel():
        raise LatentgeoError(f"x_star has shape {tuple(xstar.shape)} but the curve's points have shape "
                             f"{tuple(xs3.shape[2:])}; pass one point of the data shape")
    xstar = xstar.reshape(1, *xs3.shape[2:])
    _check_points(xstar, "x_star")
    sstar = torch.as_tensor(float(sigma_star), dtype=xs3.dtype, device=xs3.device).reshape(1)
    _check_sigma(sstar, "sigma_star")
    # bridge from z* to gamma_0 of every curve: [P, n_bridge, ...]
    t = torch.linspace(0, 1, n_bridge, dtype=xs3.dtype, device=xs3.device)
    tb = t.reshape(1, -1, *([1] * (xs3.ndim - 2)))
    bx = (1 - tb) * xstar.unsqueeze(0) + tb * xs3[:, :1]
    lam = (1 - t)[None] * lambda_of_sigma(sstar)[None] + t[None] * lambda_of_sigma(s2[:, :1])
    bs = sigma_of_lambda(lam)
    full_x = torch.cat([bx, xs3[:, 1:]], dim=1)
    full_s = torch.cat([bs, s2[:, 1:]], dim=1)
    M = full_s.shape[1]
    mx, ms = _curve_mu(denoiser, full_x, full_s, n_probes, generator, shared_probes=True)
    ex, es = eta(full_x.reshape(P * M, *xs3.shape[2:]), full_s.reshape(-1))
    ex, es = ex.reshape(full_x.shape), es.reshape(full_s.shape)
    # mu(z*) is the first bridge point's mu (same probes: shared along the bridge)
    rx, rs = mx - mx[:, :1], ms - ms[:, :1]
    avg_x = 0.5 * (rx[:, 1:] + rx[:, :-1])
    avg_s = 0.5 * (rs[:, 1:] + rs[:, :-1])
    inc = ((ex[:, 1:] - ex[:, :-1]) * avg_x).reshape(P, M - 1, -1).sum(-1) + (es[:, 1:] - es[:, :-1]) * avg_s
    kl = torch.cat([torch.zeros_like(inc[:, :1]), torch.cumsum(inc, dim=1)], dim=1)[:, n_bridge - 1:]
    return kl if batched else kl[0]
