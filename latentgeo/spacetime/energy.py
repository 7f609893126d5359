"""One geodesic optimisation step: the discretised energy of [P, N, ...] curves and its gradient.

Shared by the eager optimiser (:mod:`latentgeo.spacetime.geodesic`) and the compiled step
(:mod:`latentgeo.spacetime.fast`, which traces this function), so that neither imports the other.

For images, ``chunk_size`` bounds memory: since the energy is bilinear in ``eta`` and ``mu``, ``dE/dmu`` depends only
on the (cheap) ``eta`` values and can be computed before any denoiser call, so each chunk of points computes its
``mu`` with a graph, back-propagates immediately with that known upstream gradient and frees its graph; the
``dE/deta`` half is done at the end from the stored (detached) ``mu`` values. The gradient is identical to the
unchunked one.

The gradient is a double backward through the denoiser (a vector-Jacobian product for the divergence, then the
gradient of the energy): the denoiser's graph is built with attention in its math form
(:func:`latentgeo.autodiff.math_attention`), because fused attention kernels have no second derivative.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from latentgeo.spacetime.family import (_basis_probes, _denoise_and_quad, _segment_dots, _shared_probes, eta, mu)

__all__ = ["energy_and_grad"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pad_diff(d: torch.Tensor) -> torch.Tensor:
    """For differences d_n = a_{n+1} - a_n ([P, N-1, ...]) return d_{n-1} - d_n with zero padding ([P, N, ...])."""
    z = torch.zeros_like(d[:, :1])
    return torch.cat([z, d], 1) - torch.cat([d, z], 1)


def energy_and_grad(denoiser: Denoiser, xs: torch.Tensor, sigmas: torch.Tensor, params: List[torch.Tensor],
                    n_probes: Optional[int] = 1, generator: Optional[torch.Generator] = None,
                    chunk_size: Optional[int] = None, penalty: Optional[Penalty] = None,
                    batched: bool = True, robust: bool = True):
    """Energies of [P, N, ...] curves and the gradient of ``sum objective + penalty`` w.r.t. ``params``.

    ``xs``/``sigmas`` must be differentiable functions of ``params``. Probes are shared along each curve.
    ``chunk_size`` (rows of the flattened P*N points) bounds memory (see the module docstring).
    ``robust``: the objective is ``(N-1)/2 sum_n |d_n|`` instead of ``sum_n d_n``. Every segment term ``d_n`` is a
    symmetrised KL (>= 0) for a true posterior-mean denoiser, so nothing changes there; a trained denoiser whose
    Jacobian is not symmetric positive semi-definite off the data can give ``d_n < 0``, and the signed energy is
    then unbounded below (the optimiser runs the curve into such regions). The reported energy stays signed.
    Returns ``(energy [P] detached (signed), penalty float, grads)``.
    """
    P, N = sigmas.shape
    c = 0.5 * (N - 1)
    probes = _shared_probes(n_probes, xs, generator)
    flat = P * N
    pen_val = 0.0
    if not chunk_size or chunk_size >= flat:
        # Fast path (few tensor ops: this runs once per Adam step): eta and mu as [P, N, n + 1] rows, one diff-dot.
        xf, sf = xs.reshape(flat, *xs.shape[2:]), sigmas.reshape(flat)
        exact = probes is None
        pr = _basis_probes(xf) if exact else probes
        D, q = _denoise_and_quad(denoiser, xf, sf, pr, True)
        div = q.sum(0) if exact else q.mean(0)
        s2 = sf * sf
        inv = 1.0 / s2
        xv, Dv = xf.reshape(flat, -1), D.reshape(flat, -1)
        e = torch.cat([xv * inv[:, None], (-0.5 * inv)[:, None]], 1).view(P, N, -1)
        m = torch.cat([Dv, (s2 * div + (Dv * Dv).sum(1))[:, None]], 1).view(P, N, -1)
        d = ((e[:, 1:] - e[:, :-1]) * (m[:, 1:] - m[:, :-1])).sum(-1)
        E = c * d.sum(-1)
        loss = c * d.abs().sum() if robust else E.sum()
        if penalty is not None:
            pen = penalty(xs if batched else xs[0], sigmas if batched else sigmas[0])
            loss = loss + pen
            pen_val = float(pen.detach())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return E.detach(), pen_val, grads
    # Chunked. The objective c * sum_n w_n (eta_{n+1}-eta_n).(mu_{n+1}-mu_n) (w_n = 1, or sign(d_n) when robust) is
    # bilinear, so dObj/dmu needs only eta (and the signs): each chunk computes its mu with a graph, back-propagates
    # that known upstream gradient at once and frees its graph; the eta half uses the stored detached mu values.
    xd = xs.detach().reshape(flat, *xs.shape[2:]).requires_grad_(True)
    sd = sigmas.detach().reshape(flat).requires_grad_(True)
    ex, es = eta(xd, sd)
    ex3, es2 = ex.reshape(xs.shape), es.reshape(P, N)
    chunks = [(i, min(i + int(chunk_size), flat)) for i in range(0, flat, int(chunk_size))]
    if robust:  # the signs need every mu first: one extra pass without the double-backward graph
        m0x, m0s = [], []
        for i, j in chunks:
            pr = None if probes is None else probes[:, i:j]
            a, b = mu(denoiser, xd[i:j].detach(), sd[i:j].detach(), n_probes=n_probes, probes=pr, create_graph=False)
            m0x.append(a)
            m0s.append(b)
        with torch.no_grad():
            w = torch.sign(_segment_dots(ex3, es2, torch.cat(m0x).reshape(xs.shape), torch.cat(m0s).reshape(P, N)))
    else:
        w = torch.ones(P, N - 1, dtype=xs.dtype, device=xs.device)
    wv = w.reshape(P, N - 1, *([1] * (xs.ndim - 2)))
    with torch.no_grad():
        gmx = c * _pad_diff(wv * ex3.diff(dim=1)).reshape(ex.shape)
        gms = c * _pad_diff(w * es2.diff(dim=1)).reshape(flat)
    gx = torch.zeros_like(xd)
    gs = torch.zeros_like(sd)
    mxs, mss = [], []
    for i, j in chunks:
        xc = xd[i:j].detach().requires_grad_(True)
        sc = sd[i:j].detach().requires_grad_(True)
        pr = None if probes is None else probes[:, i:j]
        a, b = mu(denoiser, xc, sc, n_probes=n_probes, probes=pr, create_graph=True)
        ga, gb = torch.autograd.grad((a, b), (xc, sc), grad_outputs=(gmx[i:j], gms[i:j]))
        gx[i:j] += ga
        gs[i:j] += gb
        mxs.append(a.detach())
        mss.append(b.detach())
    mx = torch.cat(mxs).reshape(xs.shape)
    ms = torch.cat(mss).reshape(P, N)
    d = _segment_dots(ex3, es2, mx, ms)
    E = c * d.sum(-1)
    ga, gb = torch.autograd.grad(c * (w * d).sum(), (xd, sd))
    gx += ga
    gs += gb
    outs, gouts = [xs, sigmas], [gx.reshape(xs.shape), gs.reshape(P, N)]
    if penalty is not None:
        pen = penalty(xs if batched else xs[0], sigmas if batched else sigmas[0])
        outs.append(pen)
        gouts.append(torch.ones_like(pen))
        pen_val = float(pen.detach())
    grads = torch.autograd.grad(outs, params, grad_outputs=gouts, allow_unused=True)
    return E.detach(), pen_val, grads
