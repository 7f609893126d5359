"""One geodesic optimisation step: the discretised energy of [P, N, ...] curves and the gradient of the objective.

Shared by the eager optimiser (:mod:`latentgeo.spacetime.geodesic`) and the compiled step
(:mod:`latentgeo.spacetime.fast`, which traces this function), so that neither imports the other.

Objective. With segment components ``c_nk = (eta_{n+1} - eta_n)_k (mu_{n+1} - mu_n)_k`` (k over the coordinates of
the sufficient statistic ``(x0, |x0|^2)``; ``d_n = sum_k c_nk`` is the symmetrised KL of segment n), every objective
is ``(N-1)/2 sum_nk W_nk c_nk`` with piecewise-constant weights: ``"abs"`` ``W_nk = sign(d_n)`` (``sum |d_n|``),
``"relu"`` ``W_nk = [c_nk > 0]`` (``sum_nk max(c_nk, 0)``, the authors' form), ``"signed"`` ``W = 1``. It is
bilinear in ``eta`` and ``mu`` for fixed weights, so its gradients with respect to both are closed forms
(``dObj/dmu_n = (N-1)/2 (W_{n-1} (eta_n - eta_{n-1}) - W_n (eta_{n+1} - eta_n))`` and likewise for ``eta``): the step
computes them without autograd and runs ONE backward pass through the denoiser with those upstream gradients (the
double backward), then one through the curve parametrisation. ``chunk_size`` bounds memory the same way: each chunk
computes its ``mu`` with a graph, back-propagates its known upstream gradient at once and frees its graph.

Probes. The M divergence probes of a step either share ONE forward pass on the B = P*N points, their M
vector-Jacobian products being one vmapped backward (``is_grads_batched``: "fused probes"; fewer flops), or run on
the M-fold replicated batch of :func:`latentgeo.spacetime.family.mu` (fewer, larger ops). On the CPU the fused form
wins once the replicated batch exceeds a few hundred rows (one thread, alanine-size MLPs, exact divergence in 2-D:
0.81-0.90x the replicated time at N = 512, equal at N = 128, 1.1x at N = 64), so it is used there when
``M * B > 256`` (:data:`FUSE_MIN_ROWS`); the replicated batch otherwise and on GPUs. A denoiser whose backward
cannot be vmapped falls back (remembered per denoiser) to the replicated batch. The two give the same values up to
floating-point rounding.

The gradient is a double backward through the denoiser (a vector-Jacobian product for the divergence, then the
gradient of the objective): the denoiser's graph is built with attention in its math form
(:func:`latentgeo.autodiff.math_attention`), because fused attention kernels have no second derivative.
"""
from __future__ import annotations

import weakref
from typing import Callable, List, Optional

import torch

from latentgeo.autodiff import math_attention
from latentgeo.errors import LatentgeoError
from latentgeo.spacetime.family import (OBJECTIVES, _basis_probes, _check_objective, _denoise_and_quad, _segment_parts,
                                        _shared_probes, mu)

__all__ = ["energy_and_grad", "resolve_objective", "DEFAULT_OBJECTIVE", "OBJECTIVES"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: The objective :func:`latentgeo.spacetime.geodesic` minimises by default (see the README's objective table).
DEFAULT_OBJECTIVE = "abs"


def resolve_objective(objective: Optional[str] = None, robust: bool = True) -> str:
    """The objective name from ``objective=`` and the older ``robust=`` flag (``robust=False`` = ``"signed"``)."""
    if objective is None:
        return DEFAULT_OBJECTIVE if robust else "signed"
    _check_objective(objective)
    if not robust and objective != "signed":
        raise LatentgeoError(f"robust=False is the older spelling of objective='signed' and contradicts "
                             f"objective={objective!r}; pass objective= alone")
    return objective


def _pad_diff(d: torch.Tensor) -> torch.Tensor:
    """For differences d_n = a_{n+1} - a_n ([P, N-1, ...]) return d_{n-1} - d_n with zero padding ([P, N, ...])."""
    z = torch.zeros_like(d[:, :1])
    return torch.cat([z, d], 1) - torch.cat([d, z], 1)


def _weights(cx: torch.Tensor, cs: torch.Tensor, objective: str):
    """Objective weights ``(W_x [P, N-1, n], W_s [P, N-1])`` (broadcastable) for components ``cx``, ``cs``."""
    if objective == "abs":
        w = torch.sign(cx.sum(-1) + cs)
        return w[..., None], w
    if objective == "relu":
        return (cx > 0).to(cx.dtype), (cs > 0).to(cs.dtype)
    one = torch.ones((), dtype=cs.dtype, device=cs.device)
    return one, one


def _upstream(x, s, D, div, P, N, objective, c):
    """Energies and the closed-form gradients of the objective, for flat points ``x`` [B, n], ``s`` [B] and their
    ``D`` [B, n], ``div`` [B] (no graph).

    Returns ``(E [P], gD [B, n], gdiv [B], gx [B, n], gs [B])``: ``gD``/``gdiv`` are the upstream gradients for the
    denoiser's output and divergence, ``gx``/``gs`` the direct ones of the points (through ``eta`` and ``sigma^2
    div``)."""
    s2 = s * s
    inv = 1.0 / s2
    e = torch.cat([x * inv[:, None], (-0.5 * inv)[:, None]], 1).view(P, N, -1)
    m = torch.cat([D, (s2 * div + (D * D).sum(1))[:, None]], 1).view(P, N, -1)
    de, dm = e[:, 1:] - e[:, :-1], m[:, 1:] - m[:, :-1]
    prod = de * dm
    d = prod.sum(-1)
    E = c * d.sum(-1)
    if objective == "abs":
        w = torch.sign(d)[..., None]
    elif objective == "relu":
        w = (prod > 0).to(prod.dtype)
    else:
        w = None
    a = torch.stack([de, dm]) if w is None else torch.stack([de, dm]) * w  # [2, P, N-1, K]
    z = torch.zeros_like(a[:, :, :1])
    g = (c * (torch.cat([z, a], 2) - torch.cat([a, z], 2))).view(2, P * N, -1)  # d obj / d(mu, eta)
    gmx, gms, gex, ges = g[0, :, :-1], g[0, :, -1], g[1, :, :-1], g[1, :, -1]
    gD = gmx + 2.0 * D * gms[:, None]
    inv_s = inv / s
    gx = gex * inv[:, None]
    gs = (gex * x).sum(1) * (-2.0 * inv_s) + ges * inv_s + gms * (2.0 * s) * div
    return E, gD, gms * s2, gx, gs


#: fused probes (one forward, vmapped VJPs) when the replicated batch would have more rows than this (CPU only)
FUSE_MIN_ROWS = 256

# denoisers whose backward could not be vmapped (they use the replicated batch from then on)
_NO_VMAP: "weakref.WeakSet" = weakref.WeakSet()
_NO_VMAP_IDS: set = set()


def _vmap_refused(denoiser) -> bool:
    try:
        return denoiser in _NO_VMAP
    except TypeError:
        return id(denoiser) in _NO_VMAP_IDS


def _refuse_vmap(denoiser) -> None:
    try:
        _NO_VMAP.add(denoiser)
    except TypeError:
        _NO_VMAP_IDS.add(id(denoiser))


def _forward(denoiser, x, s):
    with math_attention():
        out = denoiser(x, s)
    if out.shape != x.shape:
        raise LatentgeoError(f"the denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                             "it must return E[x0|x] with the shape of x")
    if not out.requires_grad:
        raise LatentgeoError("the denoiser's output does not depend differentiably on x (it was detached, "
                             "computed under no_grad or outside torch); spacetime quantities need dD/dx, so make "
                             "D a differentiable torch function of x")
    return out


def _quad_fused(denoiser, x: torch.Tensor, s: torch.Tensor, probes: torch.Tensor):
    """``D`` [B, ...] and ``q = v^T (dD/dx) v`` [M, B] with graphs, from one forward pass on the B rows and one
    vmapped vector-Jacobian product; ``None`` when the denoiser's backward cannot be vmapped."""
    out = _forward(denoiser, x, s)
    M = probes.shape[0]
    try:
        (g,) = torch.autograd.grad(out, x, grad_outputs=probes, create_graph=True, is_grads_batched=True)
    except (RuntimeError, NotImplementedError):  # no batching rule / custom Function without vmap support
        _refuse_vmap(denoiser)
        return None
    q = (g * probes).reshape(M, x.shape[0], -1).sum(-1)
    return out, q


def energy_and_grad(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, params: List[torch.Tensor],
                    n_probes: Optional[int] = 1, generator: Optional[torch.Generator] = None,
                    chunk_size: Optional[int] = None, penalty: Optional[Penalty] = None,
                    batched: bool = True, robust: bool = True, objective: Optional[str] = None,
                    fused_probes: Optional[bool] = None):
    """Energies of [P, N, ...] curves and the gradient of ``sum objective + penalty`` w.r.t. ``params``.

    ``xs``/``sigmas`` must be differentiable functions of ``params``. Probes are shared along each curve.
    ``chunk_size`` (rows of the flattened P*N points) bounds memory (see the module docstring).
    ``objective``: ``"abs"`` (default, ``(N-1)/2 sum_n |d_n|``), ``"relu"`` (``(N-1)/2 sum_nk max(c_nk, 0)`` over the
    segment components, :func:`~latentgeo.spacetime.family.segment_components`) or ``"signed"`` (``(N-1)/2 sum_n
    d_n``, the energy itself). Every ``d_n`` is a symmetrised KL (>= 0) for a true posterior-mean denoiser, so
    ``"abs"`` changes nothing there; a trained denoiser whose Jacobian is not symmetric PSD off the data can give
    ``d_n < 0``, and the signed energy is then unbounded below. ``robust=False`` is the older spelling of
    ``objective="signed"``. The reported energy is always the signed one.
    ``fused_probes``: one forward pass and a vmapped backward for all probes instead of the replicated batch
    (``None``: when that is faster, see the module docstring; same values up to rounding).
    Returns ``(energy [P] detached (signed), penalty float, grads)``.
    """
    objective = resolve_objective(objective, robust)
    P, N = sigmas.shape
    c = 0.5 * (N - 1)
    probes = _shared_probes(n_probes, xs, generator)
    flat = P * N
    exact = probes is None
    if not chunk_size or chunk_size >= flat:
        # Fast path: one forward on the B points, one (vmapped) VJP for the divergences, the objective's gradients
        # in closed form, then ONE backward pass from (D, divergences, points) to params (the double backward
        # through the denoiser and the curve parametrisation together).
        with torch.enable_grad():
            xf, sf = xs.reshape(flat, *xs.shape[2:]), sigmas.reshape(flat)
            pr = _basis_probes(xf) if exact else probes
            got = None
            if fused_probes is None:
                fused_probes = xf.device.type == "cpu" and pr.shape[0] * flat > FUSE_MIN_ROWS
            if fused_probes and pr.shape[0] > 1 and not _vmap_refused(denoiser):
                got = _quad_fused(denoiser, xf, sf, pr)
            D, q = _denoise_and_quad(denoiser, xf, sf, pr, True) if got is None else got
            with torch.no_grad():
                div = q.sum(0) if exact else q.mean(0)
                E, gD, gdiv, gx, gs = _upstream(xf.reshape(flat, -1), sf, D.reshape(flat, -1), div, P, N, objective, c)
                gq = (gdiv if exact else gdiv / q.shape[0]).expand(q.shape)
            pairs = [(D, gD.reshape(D.shape)), (q, gq), (xf, gx.reshape(xf.shape)), (sf, gs)]
            pen_val = 0.0
            if penalty is not None:
                pen = penalty(xs if batched else xs[0], sigmas if batched else sigmas[0])
                pairs.append((pen, torch.ones_like(pen)))
                pen_val = float(pen.detach())
            return E.detach(), pen_val, _grad_pairs(pairs, params)
    xd = xs.detach().reshape(flat, *xs.shape[2:]).requires_grad_(True)
    sd = sigmas.detach().reshape(flat).requires_grad_(True)
    gx, gs, E = _chunked(denoiser, xd, sd, xs.shape, P, N, c, probes, n_probes, int(chunk_size), objective)
    return _finish(xs, sigmas, params, gx, gs, E, penalty, batched)


def _grad_pairs(pairs, inputs):
    """``autograd.grad`` of the outputs that have a graph (a linear denoiser's divergence is a constant)."""
    keep = [(o, g) for o, g in pairs if o.requires_grad]
    if not keep:
        return tuple(None for _ in inputs)
    return torch.autograd.grad([o for o, _ in keep], inputs, grad_outputs=[g for _, g in keep], allow_unused=True)


def _finish(xs, sigmas, params, gx, gs, E, penalty, batched):
    """Back-propagate the point gradients (and the penalty) to ``params``."""
    P, N = sigmas.shape
    pen_val = 0.0
    outs, gouts = [xs, sigmas], [gx.reshape(xs.shape), gs.reshape(P, N)]
    if penalty is not None:
        with torch.enable_grad():
            pen = penalty(xs if batched else xs[0], sigmas if batched else sigmas[0])
        outs.append(pen)
        gouts.append(torch.ones_like(pen))
        pen_val = float(pen.detach())
    return E.detach(), pen_val, _grad_pairs(list(zip(outs, gouts)), params)


def _chunked(denoiser, xd, sd, shape, P, N, c, probes, n_probes, chunk_size, objective):
    """The gradient with at most ``chunk_size`` rows in the denoiser at a time (same values as the fast path).

    The objective's weights need every ``mu`` first (one pass without the double-backward graph, skipped for
    ``"signed"``); then each chunk computes its ``mu`` with a graph and back-propagates its closed-form upstream
    gradient at once, freeing its graph."""
    flat = P * N
    chunks = [(i, min(i + chunk_size, flat)) for i in range(0, flat, chunk_size)]
    xv, s = xd.detach().reshape(flat, -1), sd.detach()
    s2 = s * s
    inv = 1.0 / s2
    ex, es = (xv * inv[:, None]).view(P, N, -1), (-0.5 * inv).view(P, N)
    if objective != "signed":
        m0x, m0s = [], []
        for i, j in chunks:
            pr = None if probes is None else probes[:, i:j]
            a, b = mu(denoiser, xd[i:j].detach(), sd[i:j].detach(), n_probes=n_probes, probes=pr, create_graph=False)
            m0x.append(a.reshape(j - i, -1))
            m0s.append(b)
        cx0, cs0 = _segment_parts(ex, es, torch.cat(m0x).view(P, N, -1), torch.cat(m0s).view(P, N))
        wx, ws = _weights(cx0, cs0, objective)
    else:
        wx, ws = _weights(None, es[:, 1:], objective)
    gmx = (c * _pad_diff(wx * (ex[:, 1:] - ex[:, :-1]))).reshape(flat, -1)
    gms = (c * _pad_diff(ws * (es[:, 1:] - es[:, :-1]))).reshape(flat)
    gx = torch.zeros_like(xv)
    gs = torch.zeros_like(s)
    mxs, mss, divs = [], [], []
    for i, j in chunks:
        xc = xd[i:j].detach().requires_grad_(True)
        sc = sd[i:j].detach().requires_grad_(True)
        pr = None if probes is None else probes[:, i:j]
        a, b = mu(denoiser, xc, sc, n_probes=n_probes, probes=pr, create_graph=True)
        ga, gb = _grad_pairs([(a, gmx[i:j].reshape(a.shape)), (b, gms[i:j])], (xc, sc))
        if ga is not None:
            gx[i:j] += ga.reshape(j - i, -1)
        if gb is not None:
            gs[i:j] += gb
        mxs.append(a.detach().reshape(j - i, -1))
        mss.append(b.detach())
    mx, ms = torch.cat(mxs).view(P, N, -1), torch.cat(mss).view(P, N)
    cx, cs = _segment_parts(ex, es, mx, ms)
    E = c * (cx.sum(-1) + cs).sum(-1)
    gex = (c * _pad_diff(wx * (mx[:, 1:] - mx[:, :-1]))).reshape(flat, -1)
    ges = (c * _pad_diff(ws * (ms[:, 1:] - ms[:, :-1]))).reshape(flat)
    inv_s = inv / s
    gx += gex * inv[:, None]
    gs += (gex * xv).sum(1) * (-2.0 * inv_s) + ges * inv_s
    return gx.reshape(xd.shape), gs, E
