"""Diffusion Edit Distance (DiffED): the spacetime geodesic length between ``(a, sigma_min)`` and ``(b, sigma_min)``.

Distances blow up as sigma -> 0 (``eta = x / sigma^2``), so the endpoints sit at a small ``sigma_min``. With
``encode=True`` clean data are first carried to ``sigma_min`` along the probability-flow ODE
``dx/dsigma = (x - D(x, sigma)) / sigma`` (deterministic, so the encoding is a function of the data point).
The geodesic between the two noisy points typically rises to lower SNR (a noising edit) and comes back (a denoising
edit); its length is the distance.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from latentgeo.errors import LatentgeoError, check_finite, check_positive
from latentgeo.spacetime.geodesic import Geodesic, geodesic

__all__ = ["edit_distance", "edit_distance_pairs", "edit_distance_matrix", "pf_ode_path", "encode_to_sigma"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pf_ode_path(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """Heun integration of the PF-ODE through the noise levels ``sigmas`` [S] (increasing or decreasing, all > 0).

    ``x`` [B, ...] is the state at ``sigmas[0]``. Returns all states [S, B, ...]. ``grad=True`` keeps the graph
    (differentiable decoder/encoder).
    """
    x = torch.as_tensor(x)
    sigmas = torch.as_tensor(sigmas, device=x.device)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise LatentgeoError("PF-ODE noise levels must be finite and > 0 (the ODE is singular at sigma = 0)")
    check_finite(x, "x")
    out = [x]
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        B = x.shape[0]
        for i in range(sigmas.shape[0] - 1):
            s0, s1 = sigmas[i], sigmas[i + 1]
            d0 = (x - denoiser(x, s0.expand(B))) / s0
            x1 = x + (s1 - s0) * d0
            d1 = (x1 - denoiser(x1, s1.expand(B))) / s1
            x = x + (s1 - s0) * 0.5 * (d0 + d1)
            if not bool(torch.isfinite(x).all()):
                raise LatentgeoError(f"the PF-ODE state became NaN/inf between sigma = {float(s0):.4g} and "
                                     f"{float(s1):.4g}: the denoiser returned NaN/inf there; check it at those noise "
                                     "levels")
            out.append(x)
    return torch.stack(out)


def _rho_grid(lo: float, hi: float, steps: int, dtype, device, rho: float = 7.0) -> torch.Tensor:
    """``steps + 1`` noise levels from ``lo`` up to ``hi``, EDM rho-spaced (dense at low noise)."""
    i = torch.linspace(0, 1, steps + 1, dtype=dtype, device=device)
    return (lo ** (1 / rho) + i * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho


def encode_to_sigma(denoiser: Denoiser, x0: torch.Tensor, sigma: float, steps: int = 32,
                    sigma_start: float = 0.002) -> torch.Tensor:
    """Carry clean data ``x0`` [B, ...] to noise level ``sigma`` along the PF-ODE (Heun, rho-spaced).

    ``x0`` is taken as the state at ``sigma_start`` (the ODE is singular at 0). Uses
    ``latentgeo.diffusion.pf_ode_encode`` when available, else the same scheme here.
    """
    x0 = torch.as_tensor(x0)
    check_finite(x0, "x0")
    if not (0 < sigma_start < sigma):
        raise LatentgeoError(f"need 0 < sigma_start ({sigma_start}) < sigma ({sigma}) to PF-ODE-encode; lower "
                             "sigma_start or raise sigma_min")
    try:
        from latentgeo.diffusion import pf_ode_encode
    except ImportError:  # the diffusion area is optional here
        pf_ode_encode = None
    if pf_ode_encode is not None:
        z = pf_ode_encode(denoiser, x0, float(sigma), steps=steps, sigma_min=float(sigma_start))
    else:
        grid = _rho_grid(float(sigma_start), float(sigma), steps, x0.dtype, x0.device)
        z = pf_ode_path(denoiser, x0, grid)[-1]
    if not bool(torch.isfinite(z).all()):
        raise LatentgeoError(f"PF-ODE encoding to sigma = {float(sigma):.4g} gave NaN/inf: the denoiser returned "
                             f"NaN/inf between sigma = {float(sigma_start):.4g} and {float(sigma):.4g}; check it there")
    return z


def _multires(denoiser, start, end, n_points, steps, **kw) -> Geodesic:
    """Geodesic with a coarse-to-fine schedule: ``n_points``/``steps`` may be sequences (warm starts)."""
    pts = list(n_points) if isinstance(n_points, (list, tuple)) else [int(n_points)]
    sts = list(steps) if isinstance(steps, (list, tuple)) else [int(steps)] * len(pts)
    if len(pts) != len(sts):
        raise LatentgeoError(f"n_points {pts} and steps {sts} must have the same length; e.g. (16, 64) and (150, 50)")
    res, nodes = None, kw.pop("init_nodes", None)
    for n, s in zip(pts, sts):
        res = geodesic(denoiser, start, end, n_points=n, steps=s, init_nodes=nodes, **kw)
        nodes = res.nodes
    return res


def edit_distance_pairs(denoiser: Denoiser, A: torch.Tensor, B: torch.Tensor, sigma_min: float = 0.1,
                        encode: bool = False, n_points: Union[int, Sequence[int]] = 32, n_nodes: int = 8,
                        steps: Union[int, Sequence[int]] = 200, lr: float = 0.1, n_probes: Optional[int] = 1,
                        eval_probes: Union[int, None, str] = "auto", chunk_size: Optional[int] = None,
                        generator: Optional[torch.Generator] = None, encode_steps: int = 32,
                        encode_from: float = 0.002, progress: bool = False, return_geodesic: bool = False):
    """DiffED for P pairs at once: ``A``, ``B`` [P, ...] -> lengths [P] (batched geodesics).

    Args:
        sigma_min: noise level of the endpoints.
        encode: first PF-ODE-encode ``A`` and ``B`` (clean data) from ``encode_from`` to ``sigma_min``.
        n_points, steps: discretisation and Adam steps; sequences give a coarse-to-fine schedule (anchor for images:
            8 nodes, (16, 64) points), each stage warm-started from the previous one.
        Others as in :func:`latentgeo.spacetime.geodesic`.
    """
    check_positive(float(sigma_min), "sigma_min")
    A = torch.as_tensor(A)
    B = torch.as_tensor(B, dtype=A.dtype, device=A.device)
    if A.shape != B.shape or A.ndim < 2:
        raise LatentgeoError(f"A and B must both be [P, ...] with the same shape; got {tuple(A.shape)} and "
                             f"{tuple(B.shape)}")
    check_finite(A, "A")
    check_finite(B, "B")
    if encode:
        both = encode_to_sigma(denoiser, torch.cat([A, B]), sigma_min, steps=encode_steps, sigma_start=encode_from)
        A, B = both[: A.shape[0]], both[A.shape[0]:]
    s = torch.full((A.shape[0],), float(sigma_min), dtype=A.dtype, device=A.device)
    g = _multires(denoiser, (A, s), (B, s), n_points, steps, n_nodes=n_nodes, lr=lr, n_probes=n_probes,
                  generator=generator, progress=progress, chunk_size=chunk_size, batched=True,
                  eval_probes=eval_probes)
    return (g.length, g) if return_geodesic else g.length


def edit_distance(denoiser: Denoiser, a: torch.Tensor, b: torch.Tensor, sigma_min: float = 0.1,
                  encode: bool = False, return_geodesic: bool = False, **kwargs):
    """Diffusion Edit Distance between two data points ``a``, ``b`` (data shape [...]) -> float.

    The length of the spacetime geodesic between ``(a, sigma_min)`` and ``(b, sigma_min)``; with ``encode=True`` the
    clean points are first PF-ODE-encoded to ``sigma_min``. Keyword arguments as in :func:`edit_distance_pairs`.
    ``return_geodesic=True`` returns ``(distance, Geodesic)`` (the geodesic batched with P = 1).
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    if a.shape != b.shape:
        raise LatentgeoError(f"a and b have different shapes {tuple(a.shape)} and {tuple(b.shape)}; pass two points "
                             "of the same data shape")
    check_finite(a, "a")
    check_finite(b, "b")
    L, g = edit_distance_pairs(denoiser, a[None], b[None], sigma_min=sigma_min, encode=encode,
                               return_geodesic=True, **kwargs)
    return (float(L[0]), g) if return_geodesic else float(L[0])


def edit_distance_matrix(denoiser: Denoiser, X: torch.Tensor, Y: Optional[torch.Tensor] = None,
                         sigma_min: float = 0.1, encode: bool = False, pair_batch: int = 64, **kwargs) -> torch.Tensor:
    """DiffED between all rows of ``X`` [M, ...] and ``Y`` [K, ...] -> [M, K].

    With ``Y=None`` the matrix of ``X`` against itself: only pairs i < j are optimised (zero diagonal, mirrored),
    since the distance is symmetric. Pairs run as batched geodesics, ``pair_batch`` at a time. ``encode=True``
    encodes every point once. Keyword arguments as in :func:`edit_distance_pairs`. The matrix is on ``X``'s device.
    """
    X = torch.as_tensor(X)
    if X.ndim < 2:
        raise LatentgeoError(f"X has shape {tuple(X.shape)}; pass one data point per row, [M, ...] (e.g. X[:, None] "
                             "for 1-D data)")
    check_finite(X, "X")
    if Y is not None:
        Y = torch.as_tensor(Y, dtype=X.dtype, device=X.device)
        if Y.ndim != X.ndim or Y.shape[1:] != X.shape[1:]:
            raise LatentgeoError(f"X has shape {tuple(X.shape)} and Y {tuple(Y.shape)}; their points (all but the "
                                 "first axis) must have the same shape")
        check_finite(Y, "Y")
    check_positive(float(sigma_min), "sigma_min")
    if int(pair_batch) < 1:
        raise LatentgeoError(f"pair_batch must be >= 1, got {pair_batch}")
    pair_batch = int(pair_batch)
    enc_steps = kwargs.pop("encode_steps", 32)
    enc_from = kwargs.pop("encode_from", 0.002)
    sym = Y is None
    if encode:
        X = encode_to_sigma(denoiser, X, sigma_min, steps=enc_steps, sigma_start=enc_from)
        if not sym:
            Y = encode_to_sigma(denoiser, torch.as_tensor(Y, dtype=X.dtype, device=X.device), sigma_min,
                                steps=enc_steps, sigma_start=enc_from)
    Y = X if sym else torch.as_tensor(Y, dtype=X.dtype, device=X.device)
    M, K = X.shape[0], Y.shape[0]
    dev = X.device
    if sym:
        idx = torch.triu_indices(M, M, offset=1, device=dev)
    else:
        ii, jj = torch.meshgrid(torch.arange(M, device=dev), torch.arange(K, device=dev), indexing="ij")
        idx = torch.stack([ii.reshape(-1), jj.reshape(-1)])
    out = torch.zeros(M, K, dtype=X.dtype, device=dev)
    for start in range(0, idx.shape[1], int(pair_batch)):
        i, j = idx[0, start:start + pair_batch], idx[1, start:start + pair_batch]
        L = edit_distance_pairs(denoiser, X[i], Y[j], sigma_min=sigma_min, encode=False, **kwargs)
        out[i, j] = L.detach().to(out.dtype)
        if sym:
            out[j, i] = out[i, j]
    return out
