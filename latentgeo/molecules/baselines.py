"""Baselines on the same surface: the (simplified) string method for the minimum energy path.

Simplified string method (E, Ren & Vanden-Eijnden, J. Chem. Phys. 126, 164103, 2007): a chain of images between the
two states; each iteration moves every interior image one gradient-descent step on the smooth energy and then
redistributes the images uniformly in arc length (linear interpolation). The endpoints stay fixed at the states.
It converges to a minimum energy path, whose highest point is the saddle — the natural deterministic reference for
MaxEnergy. Cost: ``n_images - 2`` gradient evaluations per iteration.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from latentgeo.errors import LatentgeoError

__all__ = ["string_method", "straight_path", "densify", "two_way_shooting"]


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
        raise LatentgeoError(f"n_images must be at least 3, got {n_images}; pass n_images=3 or more")
    x = straight_path(start, end, n_images) if init is None else torch.as_tensor(init, dtype=torch.float64).clone()
    for _ in range(n_iter):
        g = potential.grad(x[1:-1])
        x = torch.cat([x[:1], x[1:-1] - step * g, x[-1:]])
        x = _reparametrize(x)
        if not torch.isfinite(x).all():
            raise LatentgeoError(f"string method diverged (step={step}); use a smaller step")
    return x


def _state_distance(potential, x: torch.Tensor, center) -> torch.Tensor:
    d = x - torch.as_tensor(center, dtype=x.dtype)
    if potential.period is not None:
        d = torch.remainder(d + potential.period / 2, potential.period) - potential.period / 2
    return d.norm(dim=-1)


def two_way_shooting(potential, start: Sequence[float], end: Sequence[float], n_paths: int = 1000, *,
                     n_chains: int = 100, n_frames: int = 500, dt: float = 1e-3, kT: float = 1.0,
                     radius=0.5, burn_in: int = 50, thin: int = 1, init: torch.Tensor = None,
                     init_point: Sequence[float] = None, max_init_rounds: int = 50, seed: int = 0,
                     record_curve: bool = False, init_frame: int = None):
    """Transition path sampling by two-way shooting MCMC (Dellago, Bolhuis, Chandler & Geissler 1998), fixed length.

    ``n_chains`` independent chains run in parallel. A path is ``n_frames`` states of overdamped Langevin dynamics
    (Euler-Maruyama, ``dt``, temperature ``kT``). Each iteration every chain picks a shooting frame ``i`` uniformly,
    regenerates frames ``i+1..T-1`` forward and ``0..i-1`` backward in time from it with fresh noise (the dynamics is
    reversible, so the backward half uses the same integrator), and accepts the new path when it is reactive: one end
    within ``radius`` of ``start`` and the other within ``radius`` of ``end`` (reversed if it runs end -> start).
    With uniform shooting points and no perturbation this Metropolis rule samples the fixed-length transition path
    ensemble. Only the ``T - 1`` new states per proposal are integrated (and counted). Shooting frames are drawn
    uniformly from the path's TRANSITION REGION (frames outside both states) instead of the whole path, with the
    Metropolis factor ``min(1, n_old / n_new)`` (numbers of such frames) that keeps the ensemble exact; uniform
    shooting over all frames accepted ~0.2% of the alanine proposals (most frames sit inside a basin).

    Args:
        potential: smooth energy with counted ``grad``; distances are wrapped for periodic potentials.
        start, end: the two states' centres; radius: their size (a float, or ``(r_start, r_end)``).
        n_paths: paths to return, taken from the chains after ``burn_in`` iterations, every ``thin`` iterations.
        init: initial path ``[T, 2]`` for every chain (default: the straight segment, reactive but not dynamical;
            the first accepted shots replace it).
        init_point: instead, start every chain from a reactive dynamical path shot from this point (e.g. the
            string method's highest image), retried up to ``max_init_rounds`` times; chains that find none are
            dropped (``chains`` in the result).
        init_frame: the frame index the initial shots start from (default ``T - 1 - max(T // 20, 1)``: a short
            forward half, suited to a large start state; ``T // 2`` shoots both halves equally far).
        record_curve: also record, DURING sampling, the best path found so far against the gradient evaluations
            spent (:func:`latentgeo.molecules.metrics.best_so_far`): after the initialisation and after every
            iteration (burn-in included), the lowest MaxEnergy (scoring energy over every frame) of all the dynamical
            reactive paths produced up to then (the initial reactive shots from ``init_point`` and every accepted
            proposal; a user ``init`` / the straight segment is not dynamical and does not count), at the
            evaluations counted on ``potential`` since this call began.

    Returns:
        dict with ``paths`` ``[n_paths, T, 2]`` (unwrapped), ``acceptance`` (fraction of accepted proposals after
        burn-in), ``iterations``, ``accepted_any`` ``[n_chains]`` (chain left its initial path); with
        ``record_curve`` also ``curve`` (``{"evaluations": [...], "best_max_energy": [...]}``, non-increasing).
    """
    if n_frames < 3:
        raise LatentgeoError(f"n_frames must be at least 3, got {n_frames}; pass n_frames=3 or more")
    if n_chains < 1 or n_paths < 1:
        raise LatentgeoError(f"n_chains and n_paths must be positive, got {n_chains} and {n_paths}; "
                             "pass 1 or more for each")
    C, T = int(n_chains), int(n_frames)
    g = torch.Generator().manual_seed(seed)
    n_eval0 = int(potential.n_grad_evals)
    rec_evals, rec_best = [], []

    def record(new_paths):
        """One curve point: evaluations so far, lowest MaxEnergy among ``new_paths`` [k, T, 2] (inf if none)."""
        if not record_curve:
            return
        if new_paths.shape[0]:
            best = float(potential.score_energy(new_paths.detach().cpu().numpy()).max(axis=1).min())
        else:
            best = math.inf
        rec_evals.append(int(potential.n_grad_evals) - n_eval0)
        rec_best.append(best)

    path = straight_path(start, end, T) if init is None else torch.as_tensor(init, dtype=torch.float64)
    if path.shape != (T, 2):
        raise LatentgeoError(f"init has shape {tuple(path.shape)}; pass [n_frames, 2] = [{T}, 2]")
    paths = path[None].expand(C, T, 2).clone()
    noise = math.sqrt(2.0 * kT * dt)
    ar = torch.arange(C)
    t_idx = torch.arange(T)
    kept, n_acc, n_prop, it = [], 0, 0, 0
    moved = torch.zeros(C, dtype=torch.bool)

    r_a, r_b = (radius, radius) if not isinstance(radius, (tuple, list)) else (float(radius[0]), float(radius[1]))

    def _outside(p):
        return (_state_distance(potential, p, start) >= r_a) & (_state_distance(potential, p, end) >= r_b)

    def shoot(paths, i):
        """Regenerate every path [C', T, 2] around frame i [C'] (forward T-1-i steps, backward i steps)."""
        Cc = paths.shape[0]
        arc = torch.arange(Cc)
        x0 = paths[arc, i]
        # forward walkers need T-1-i steps, backward walkers i: one batch, integrating only the active rows
        x = torch.cat([x0, x0])  # [2C', 2]
        need = torch.cat([T - 1 - i, i])
        traj = torch.empty(T - 1, 2 * Cc, 2, dtype=torch.float64)
        for k in range(T - 1):
            act = need > k
            if not bool(act.any()):
                traj[k:] = x[None]
                break
            xa = x[act]
            x[act] = xa - dt * potential.grad(xa) + noise * torch.randn(xa.shape, generator=g, dtype=xa.dtype)
            traj[k] = x
        fwd, bwd = traj[:, :Cc].permute(1, 0, 2), traj[:, Cc:].permute(1, 0, 2)  # [C', T-1, 2]
        # new path frame t: t < i -> bwd[i-1-t]; t == i -> x0; t > i -> fwd[t-i-1]
        tt = t_idx[None].expand(Cc, T)
        ii = i[:, None]
        pb = bwd[arc[:, None], (ii - 1 - tt).clamp(0, T - 2)]
        pf = fwd[arc[:, None], (tt - ii - 1).clamp(0, T - 2)]
        new = torch.where((tt < ii)[..., None], pb, torch.where((tt > ii)[..., None], pf, x0[:, None]))
        a0 = _state_distance(potential, new[:, 0], start) < r_a
        b1 = _state_distance(potential, new[:, -1], end) < r_b
        b0 = _state_distance(potential, new[:, 0], end) < r_b
        a1 = _state_distance(potential, new[:, -1], start) < r_a
        fwd_ok, rev_ok = a0 & b1, b0 & a1 & ~(a0 & b1)
        new = torch.where(rev_ok[:, None, None], new.flip(1), new)
        return new, fwd_ok | rev_ok

    if init_point is not None:
        # initial reactive DYNAMICAL paths: shoot from init_point (a barrier-top guess) placed at frame init_frame
        # (default near the end), until every chain has a reactive path (these evaluations are counted like all
        # others)
        i0 = T - 1 - max(T // 20, 1) if init_frame is None else int(init_frame)
        if not 0 <= i0 <= T - 1:
            raise LatentgeoError(f"init_frame must lie in 0..{T - 1}, got {init_frame!r}; pass a frame index "
                                 "in that range, or None for the default")
        xs0 = torch.as_tensor(init_point, dtype=torch.float64).reshape(1, 1, 2).expand(C, T, 2).clone()
        have = torch.zeros(C, dtype=torch.bool)
        for _ in range(int(max_init_rounds)):
            cand, ok = shoot(xs0, torch.full((C,), i0, dtype=torch.long))
            take = ok & ~have
            k = int(ok.sum())
            if k:  # fill the chains still missing a path with the reactive candidates of this round
                miss = (~have).nonzero()[:, 0][:k]
                paths[miss] = cand[ok][: miss.numel()]
                have[miss] = True
            record(cand[ok])
            if bool(have.all()):
                break
        if not bool(have.any()):
            raise LatentgeoError("no reactive initial path was found from init_point; raise n_frames or "
                                 "max_init_rounds, or pass a point on the barrier")
        paths, C = paths[have], int(have.sum())
        ar = torch.arange(C)
        moved = torch.zeros(C, dtype=torch.bool)
    info_chains = C
    need_iters = burn_in + thin * math.ceil(n_paths / C)
    while it < need_iters:
        elig = _outside(paths)  # [C, T] frames in the transition region
        n_old = elig.sum(1)
        w = torch.where(n_old[:, None] > 0, elig.double(), torch.ones(C, T, dtype=torch.float64))
        i = torch.multinomial(w, 1, generator=g)[:, 0]
        new, reactive = shoot(paths, i)
        # Metropolis correction for shooting points drawn uniformly from the transition region of the old path
        n_new = _outside(new).sum(1)
        ratio = n_old.double() / n_new.double().clamp_min(1)
        acc = reactive & (torch.rand(C, generator=g, dtype=torch.float64) < ratio)
        paths = torch.where(acc[:, None, None], new, paths)
        moved |= acc
        record(new[acc])
        if it >= burn_in:
            n_acc += int(acc.sum())
            n_prop += C
            if (it - burn_in) % thin == thin - 1 or thin == 1:
                kept.append(paths.clone())
        it += 1
    out = torch.cat(kept)[:n_paths]
    res = {"paths": out, "acceptance": n_acc / max(n_prop, 1), "iterations": it, "accepted_any": moved,
           "chains": info_chains}
    if record_curve:
        from latentgeo.molecules.metrics import best_so_far

        res["curve"] = best_so_far(rec_best, rec_evals)
    return res
