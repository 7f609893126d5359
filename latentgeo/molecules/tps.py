"""Transition path sampling through a diffusion model's spacetime (REFERENCE §3).

Pipeline of :func:`transition_paths`:

1. Boltzmann data: batched overdamped Langevin on the smooth potential from uniform starts (counted gradients).
2. A denoiser of that data: an EDM-preconditioned MLP with a periodic (sin, cos) input embedding for angles
   (``denoiser="mlp"``), or the exact denoiser of a Gaussian KDE of the data (``denoiser="kde"``, training-free),
   or any callable ``D(x, sigma)``.
3. The spacetime geodesic between ``(start, sigma_end)`` and ``(end, sigma_end)`` at high SNR
   (``log-SNR = -2 log sigma``, 4 by default), optionally with the low-SNR penalty or a region-avoidance term.
4. Annealed Langevin along the geodesic: at every curve point ``n`` the ``P`` paths take ``K`` Euler-Maruyama
   steps (kT = 1) on ``U(x) + |x - x_n|^2 / (2 sigma_n^2)``, starting from where point ``n - 1`` left them, and the
   state after the ``K`` steps is the path's ``n``-th frame. Paths: ``[P, N, 2]``.
5. Score: MaxEnergy of a path is the maximum of the potential's scoring energy (the TABLE, nearest grid point with
   wrapped angles, for alanine) over EVERY Langevin state it visits (``N * K`` states: the state after each step).
   The state attaining it is kept (``max_states``), so anyone can re-score the result: ``score_energy(max_states)``
   equals ``max_energy`` exactly. ``save_states=True`` keeps every state (``all_states [P, N*K, 2]``; the frames are
   ``all_states[:, K-1::K]``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from latentgeo.errors import LatentgeoError, check_choice, check_positive
from latentgeo.molecules.langevin import _Noise, boltzmann_samples
from latentgeo.molecules.potentials import wrap_angle

__all__ = ["TPSResult", "annealed_langevin", "max_energy", "fit_tps_denoiser", "tps_geodesic", "transition_paths",
           "MAX_STATE_BYTES"]

#: ``save_states`` refuses runs whose ``[P, N*K, 2]`` float64 state array would exceed this (8 GiB).
MAX_STATE_BYTES = 8 * 1024 ** 3


@dataclass
class TPSResult:
    """Output of :func:`transition_paths`.

    Attributes:
        paths: ``[P, N, 2]`` frames (unwrapped coordinates; ``potential.wrap`` maps angles to ``[-pi, pi)``).
        max_energy: ``[P]`` MaxEnergy of every path over EVERY Langevin state it visited (strict; the ``N * K``
            states after each step; scoring energy: the table for alanine). ``max_energy_frames``: the same over the
            ``N`` recorded frames only (the frames can step over a barrier when the tether is loose, so this can fall
            below the grid lower bound).
        max_states: ``[P, 2]`` the Langevin state attaining each path's ``max_energy`` (unwrapped coordinates;
            ``potential.score_energy(max_states)`` reproduces ``max_energy`` exactly).
        all_states: ``[P, N*K, 2]`` every Langevin state (only with ``save_states=True``, else None).
        reached: ``[P]`` bool, the last frame lies within ``reach_radius`` of ``end`` (wrapped distance).
        geodesic_xs: ``[N, 2]`` and geodesic_sigmas ``[N]``: the spacetime curve the paths followed.
        evals: gradient evaluations ``{"data": ..., "sampling": ..., "total": ...}``.
        seconds: wall time per stage.
        samples: the training data ``[M, 2]``.
        info: extra numbers (geodesic energy, seconds per geodesic step, ...).
    """

    paths: np.ndarray
    max_energy: np.ndarray
    max_energy_frames: np.ndarray
    reached: np.ndarray
    geodesic_xs: np.ndarray
    geodesic_sigmas: np.ndarray
    evals: Dict[str, int]
    seconds: Dict[str, float]
    samples: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)
    denoiser: Any = None
    max_states: Optional[np.ndarray] = None
    all_states: Optional[np.ndarray] = None


def max_energy(potential, paths) -> np.ndarray:
    """MaxEnergy of each path ``[P, T, 2]`` -> ``[P]``, on the potential's scoring energy (table for alanine)."""
    p = np.asarray(paths.detach().cpu() if isinstance(paths, torch.Tensor) else paths, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise LatentgeoError(f"paths have shape {p.shape}; pass [P, T, 2]")
    return potential.score_energy(p).max(axis=1)


def annealed_langevin(
    potential,
    xs: torch.Tensor,
    sigmas: torch.Tensor,
    n_paths: int,
    k_steps: int = 64,
    step: float = 4e-4,
    kT: float = 1.0,
    generator: Optional[torch.Generator] = None,
    track_max: bool = False,
    scheme: str = "em",
    return_max_states: bool = False,
    keep_states: bool = False,
):
    """Annealed Langevin along a spacetime curve.

    Args:
        potential: smooth energy with counted ``grad`` (``n_paths * N * k_steps`` evaluations).
        xs: ``[N, 2]`` curve positions; sigmas: ``[N]`` curve noise levels (tether widths).
        n_paths: P; k_steps: K steps per curve point; step: Euler-Maruyama ``dt``; kT: temperature.

        scheme: ``"em"`` Euler-Maruyama (the paper's Algorithm 1) or ``"lm"`` Leimkuhler-Matthews (same cost, second
            order accurate stationary law; :mod:`latentgeo.molecules.langevin`).
        track_max: also return the running maximum of the scoring energy over EVERY Langevin state (``[P]``; the
            ``N * K`` states after each step), the strict MaxEnergy of the trajectory (the frames alone can step over
            a barrier between two recorded points when the tether is loose).
        return_max_states: (implies ``track_max``) also return the state attaining each path's maximum ``[P, 2]``
            (the first one, float64, unwrapped): ``potential.score_energy(max_states)`` equals ``strict_max``.
        keep_states: (implies ``return_max_states``) also return every state ``[P, N*K, 2]`` (float64, unwrapped;
            ``frames == all_states[:, K-1::K]``).

    Returns:
        paths ``[P, N, 2]`` (float64, unwrapped). Frame 0 is the state after K tethered steps at ``xs[0]``.
        With ``track_max``: ``(paths, strict_max [P])``; with ``return_max_states``: ``(paths, strict_max,
        max_states)``; with ``keep_states``: ``(paths, strict_max, max_states, all_states)``.
    """
    xs = torch.as_tensor(xs, dtype=torch.float64).detach()
    sg = torch.as_tensor(sigmas, dtype=torch.float64).detach().reshape(-1)
    if xs.ndim != 2 or xs.shape[0] != sg.shape[0]:
        raise LatentgeoError(f"curve shapes disagree: xs {tuple(xs.shape)}, sigmas {tuple(sg.shape)}; pass [N, 2], [N]")
    check_positive(step, "step")
    if isinstance(k_steps, bool) or not isinstance(k_steps, int) or k_steps < 1:
        raise LatentgeoError(f"k_steps must be an integer >= 1, got {k_steps!r} (with 0 no Langevin state is "
                             "visited and MaxEnergy means nothing); pass k_steps=1 or more")
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise LatentgeoError(f"n_paths must be a positive integer, got {n_paths!r}; pass n_paths=1 or more")
    return_max_states = return_max_states or keep_states
    track_max = track_max or return_max_states
    inv_var = 1.0 / sg ** 2
    # stability of explicit Euler on the tether alone needs dt / sigma^2 < 2
    if float(step * inv_var.max()) >= 1.0:
        raise LatentgeoError(f"step {step} is too large for the smallest sigma {float(sg.min()):.3g} "
                             f"(need step < sigma^2); lower --step or raise the endpoint sigma")
    x = xs[0].expand(n_paths, 2).clone()
    noise = math.sqrt(2.0 * kT * step)
    draw = _Noise(scheme, x.shape, x.dtype, generator)
    frames = torch.empty((n_paths, xs.shape[0], 2), dtype=torch.float64)
    strict = np.full(n_paths, -np.inf) if track_max else None
    arg = np.zeros((n_paths, 2), dtype=np.float64) if return_max_states else None
    states = torch.empty((n_paths, xs.shape[0] * k_steps, 2), dtype=torch.float64) if keep_states else None
    s_i = 0
    for n in range(xs.shape[0]):
        c, iv = xs[n], float(inv_var[n])
        for _ in range(k_steps):
            g = potential.grad(x) + iv * (x - c)
            x = x - step * g + noise * draw()
            if track_max:
                xn = x.numpy()
                e = potential.score_energy(xn)
                if return_max_states:
                    up = e > strict  # strict '>': the first state attaining the maximum is kept
                    strict[up] = e[up]
                    arg[up] = xn[up]
                else:
                    np.maximum(strict, e, out=strict)
            if keep_states:
                states[:, s_i] = x
            s_i += 1
        frames[:, n] = x
    if not torch.isfinite(frames).all():
        raise LatentgeoError(f"annealed Langevin diverged (step={step}); use a smaller step")
    if keep_states:
        return frames, strict, arg, states
    if return_max_states:
        return frames, strict, arg
    return (frames, strict) if track_max else frames


def fit_tps_denoiser(samples: torch.Tensor, kind: str = "mlp", periodic: bool = True, steps: int = 3000,
                     seed: int = 0, bandwidth: float = 0.1, kde_samples: int = 400, **fit_kwargs):
    """Denoiser of the Boltzmann samples ``[M, 2]``.

    ``kind="mlp"``: :func:`latentgeo.diffusion.fit_denoiser` with an MLP (periodic sin/cos embedding for angles).
    ``kind="kde"``: :class:`~latentgeo.molecules.kde.KDEDenoiser` (exact posterior mean of a Gaussian KDE; with
    periodic images for angles) on a random subset of ``kde_samples`` points, no training.
    """
    check_choice(kind, ("mlp", "kde"), "denoiser")
    if kind == "kde":
        from latentgeo.molecules.kde import KDEDenoiser

        g = torch.Generator().manual_seed(seed)
        sub = samples[torch.randperm(samples.shape[0], generator=g)[:kde_samples]]
        return KDEDenoiser(sub, bandwidth=bandwidth, period=2 * math.pi if periodic else None)
    try:
        from latentgeo.diffusion import fit_denoiser
    except ImportError as exc:  # pragma: no cover - depends on the diffusion area
        raise LatentgeoError(f"latentgeo.diffusion.fit_denoiser is unavailable ({exc}); use denoiser='kde'")
    torch.manual_seed(seed)
    net_kwargs = dict(fit_kwargs.pop("net_kwargs", {}) or {})
    net_kwargs.setdefault("periodic", bool(periodic))
    return fit_denoiser(samples.to(torch.float32), net="mlp", steps=steps, net_kwargs=net_kwargs, seed=seed,
                        **fit_kwargs)


def _avoid_state(avoid):
    try:
        (px, sg) = avoid
        px = torch.as_tensor(px, dtype=torch.float64).reshape(2)
        sg = float(sg)
    except (TypeError, ValueError, RuntimeError):
        raise LatentgeoError(f"avoid must be ((x, y), sigma), got {avoid!r}; e.g. ((-1.0, 0.5), 0.3)")
    check_positive(sg, "avoid sigma")
    return px, sg


def tps_geodesic(denoiser, start, end, sigma_end: float, n_points: int = 128, n_nodes: int = 10,
                 steps: int = 1000, lr: float = 0.1, snr_penalty: float = 0.0, snr_lambda: float = 3.0,
                 avoid: Optional[Tuple] = None,
                 avoid_weight: float = 1.0, avoid_kl: float = 3.0, seed: int = 0,
                 n_probes: Optional[int] = 1, compile: bool = False, objective: Optional[str] = None):
    """Spacetime geodesic between ``(start, sigma_end)`` and ``(end, sigma_end)``.

    Args:
        snr_penalty: final weight of the low-SNR penalty ``mean_n softplus_10(3 - lambda_n)`` (ramped up from 0;
            REFERENCE uses 100); 0 disables it. snr_lambda: the log-SNR the penalty keeps the curve above (REFERENCE: 3).
        avoid: ``((x*, y*), sigma*)``: a forbidden spacetime state; the curve is pushed away by maximising the KL
            from it: ``avoid_weight * mean_n softplus(avoid_kl - KL(z* || gamma_n))``
            (:class:`latentgeo.spacetime.penalties.RegionAvoidance`).
        n_probes: Rademacher probes for the divergence per step (``None``: exact, two probes in 2-D).
        compile: fused compiled optimisation step (:mod:`latentgeo.spacetime.fast`); used only when it applies
            (exact divergence, no constraint), else the eager step.
        objective: ``"abs"`` (default: ``sum_n |d_n|``) or ``"relu"`` (the authors' per-component clamp) — see
            :func:`latentgeo.spacetime.geodesic`.

    Returns:
        ``(xs [N, 2], sigmas [N], info)`` as float64 tensors, ``info`` with the geodesic ``energy``, ``length`` and
        ``seconds_per_step``.
    """
    from latentgeo.spacetime import geodesic
    from latentgeo.spacetime.penalties import RegionAvoidance, SNRPenalty, SumPenalty

    pens = []
    if snr_penalty > 0:
        pens.append(SNRPenalty(weight=snr_penalty, lambda_min=snr_lambda))
    if avoid is not None:
        px, sg = _avoid_state(avoid)
        pens.append(RegionAvoidance(denoiser, px, sg, kl_min=avoid_kl, weight=avoid_weight, n_probes=n_probes))
    penalty = None if not pens else (pens[0] if len(pens) == 1 else SumPenalty(*pens))
    a = torch.as_tensor(start, dtype=torch.float64)
    b = torch.as_tensor(end, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    res = geodesic(denoiser, start=(a, sigma_end), end=(b, sigma_end), n_points=n_points, n_nodes=n_nodes,
                   steps=steps, lr=lr, n_probes=n_probes, penalty=penalty, generator=gen, eval_probes=None,
                   compile=bool(compile and penalty is None and n_probes is None), objective=objective)
    dt = time.perf_counter() - t0
    xs = torch.as_tensor(res.xs, dtype=torch.float64).detach().reshape(n_points, -1)
    sg = torch.as_tensor(res.sigmas, dtype=torch.float64).detach().reshape(-1)
    info = {"energy": float(res.energy), "length": float(res.length), "seconds": dt,
            "seconds_per_step": float(res.seconds_per_step), "n_probes": n_probes,
            "compiled": bool(res.compile_seconds > 0), "compile_seconds": float(res.compile_seconds)}
    return xs, sg, info


def transition_paths(
    potential,
    start: Sequence[float],
    end: Sequence[float],
    n_paths: int = 1000,
    *,
    denoiser: Any = "mlp",
    n_chains: int = 2000,
    data_steps: int = 1000,
    data_step: float = 1e-3,
    data_kT: float = 1.0,
    train_steps: int = 3000,
    log_snr: float = 4.0,
    n_points: int = 128,
    n_nodes: int = 10,
    geo_steps: int = 1000,
    geo_lr: float = 0.1,
    k_steps: int = 64,
    step: float = 4e-4,
    kT: float = 1.0,
    scheme: str = "em",
    snr_penalty: float = 0.0,
    snr_lambda: float = 3.0,
    avoid: Optional[Tuple] = None,
    avoid_weight: float = 1.0,
    n_probes: Optional[int] = None,
    geo_compile: bool = False,
    geo_objective: Optional[str] = None,
    reach_radius: float = 0.5,
    net_kwargs: Optional[Dict[str, Any]] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    save_states: bool = False,
    device: str = "cpu",
) -> TPSResult:
    """Sample ``n_paths`` transition paths from ``start`` to ``end`` (see the module docstring for the stages).

    Args:
        potential: :class:`~latentgeo.molecules.AlanineTable`, :class:`~latentgeo.molecules.MuellerBrown` or any
            :class:`~latentgeo.molecules.Potential` (gradients are counted on it).
        denoiser: ``"mlp"`` (trained here), ``"kde"`` (training-free) or a callable ``D(x, sigma)``.
        n_chains, data_steps, data_step, data_kT: Boltzmann data generation (``n_chains * data_steps`` evaluations).
        train_steps: optimiser steps of the MLP denoiser.
        log_snr: endpoint log-SNR of the geodesic (``sigma = exp(-log_snr / 2)``).
        n_points (N), n_nodes, geo_steps, geo_lr: geodesic discretisation and Adam optimisation.
        k_steps (K), step, kT, scheme: annealed Langevin (``n_paths * N * K`` evaluations; scheme ``"em"`` or
            ``"lm"``, see :func:`annealed_langevin`).
        snr_penalty, snr_lambda, avoid, avoid_weight: optional constraints on the geodesic (see :func:`tps_geodesic`).
        n_probes: divergence probes in the geodesic energy (``None``: exact, cheap in 2-D).
        geo_compile: compiled geodesic step (see :func:`tps_geodesic`).
        geo_objective: the geodesic's objective, ``"abs"`` (default) or ``"relu"`` (see :func:`tps_geodesic`).
        reach_radius: a path counts as reaching ``end`` if its last frame lies within this distance.
        net_kwargs: MLP settings (default ``hidden=64, depth=2, emb_dim=32``).
        save_states: also keep every Langevin state (``TPSResult.all_states`` ``[P, N*K, 2]``; at most
            :data:`MAX_STATE_BYTES`). ``max_states`` (the state attaining each path's MaxEnergy) is always kept.
        device: where the MLP denoiser is trained (it is then moved to the CPU: the geodesic and the Langevin
            sampling run on the CPU in float64).

    Every setting is checked before the Boltzmann data are generated (one-line :class:`LatentgeoError`).
    """
    say = progress or (lambda s: None)
    _check_tps_settings(n_paths=n_paths, n_chains=n_chains, data_steps=data_steps, train_steps=train_steps,
                        n_points=n_points, n_nodes=n_nodes, geo_steps=geo_steps, k_steps=k_steps,
                        denoiser=denoiser, scheme=scheme, save_states=save_states)
    for v, nm in ((data_step, "data_step"), (data_kT, "data_kT"), (geo_lr, "geo_lr"), (step, "step"), (kT, "kT"),
                  (reach_radius, "reach_radius")):
        check_positive(v, nm)
    for v, nm in ((log_snr, "log_snr"), (snr_penalty, "snr_penalty"), (snr_lambda, "snr_lambda"),
                  (avoid_weight, "avoid_weight")):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise LatentgeoError(f"{nm} must be a finite number, got {v!r}; pass an ordinary number")
    if snr_penalty < 0 or avoid_weight < 0:
        raise LatentgeoError(f"snr_penalty and avoid_weight must be >= 0, got {snr_penalty!r} and {avoid_weight!r}; "
                             "pass 0 (off) or a positive weight")
    if avoid is not None:
        _avoid_state(avoid)
    periodic = potential.period is not None
    seconds: Dict[str, float] = {}
    potential.reset_counter()

    t0 = time.perf_counter()
    say(f"Boltzmann data: {n_chains} chains x {data_steps} Langevin steps")
    samples = boltzmann_samples(potential, n_chains=n_chains, n_steps=data_steps, step=data_step, kT=data_kT,
                                keep_last=min(data_steps, max(data_steps // 2, 1)),
                                thin=max(data_steps // 20, 1), seed=seed)
    n_data = potential.reset_counter()
    seconds["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if isinstance(denoiser, str):
        say(f"denoiser: {denoiser}")
        kw = dict(hidden=64, depth=2, emb_dim=32)
        kw.update(net_kwargs or {})
        extra = {"net_kwargs": kw, "batch_size": 512, "device": str(device)} if denoiser == "mlp" else {}
        den = fit_tps_denoiser(samples, denoiser, periodic=periodic, steps=train_steps, seed=seed, **extra)
        if isinstance(den, torch.nn.Module):
            den = den.to("cpu")
    else:
        den = denoiser
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sigma_end = math.exp(-log_snr / 2)
    say(f"geodesic: N={n_points}, {geo_steps} steps")
    xs, sgs, ginfo = tps_geodesic(den, start, end, sigma_end, n_points=n_points, n_nodes=n_nodes, steps=geo_steps,
                                  lr=geo_lr, snr_penalty=snr_penalty, snr_lambda=snr_lambda, avoid=avoid,
                                  avoid_weight=avoid_weight, seed=seed, n_probes=n_probes, compile=geo_compile,
                                  objective=geo_objective)
    seconds["geodesic"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"annealed Langevin: {n_paths} paths x {n_points} points x {k_steps} steps")
    gen = torch.Generator().manual_seed(seed + 1)
    out = annealed_langevin(potential, xs, sgs, n_paths, k_steps=k_steps, step=step, kT=kT, generator=gen,
                            track_max=True, scheme=scheme, return_max_states=True, keep_states=save_states)
    paths, strict, arg = out[:3]
    all_states = out[3].numpy() if save_states else None
    n_sampling = potential.reset_counter()
    seconds["sampling"] = time.perf_counter() - t0
    me = max_energy(potential, paths)
    d = paths[:, -1].numpy() - np.asarray(end, dtype=np.float64)
    if periodic:
        d = wrap_angle(d)
    reached = np.linalg.norm(d, axis=-1) < reach_radius
    seconds["total"] = sum(seconds.values())
    return TPSResult(
        paths=paths.numpy(), max_energy=strict, max_energy_frames=me, reached=reached, geodesic_xs=xs.numpy(), geodesic_sigmas=sgs.numpy(),
        evals={"data": int(n_data), "sampling": int(n_sampling), "total": int(n_data + n_sampling)},
        seconds=seconds, samples=samples.numpy(), info={"geodesic": ginfo, "sigma_end": sigma_end,
                                                        "states_per_path": int(n_points * k_steps)},
        denoiser=den, max_states=arg, all_states=all_states,
    )


def _check_tps_settings(*, n_paths, n_chains, data_steps, train_steps, n_points, n_nodes, geo_steps, k_steps,
                        denoiser, scheme, save_states) -> None:
    """Refuse settings that would fail late (after data generation / training) or give a meaningless MaxEnergy."""
    def int_at_least(v, nm, lo, why=""):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LatentgeoError(f"{nm} must be an integer >= {lo}, got {v!r}{why}; pass {nm}={lo} or more")

    int_at_least(n_paths, "n_paths", 1)
    int_at_least(n_chains, "n_chains", 1)
    int_at_least(data_steps, "data_steps", 1)
    int_at_least(n_points, "n_points", 2, " (the geodesic needs both end points)")
    int_at_least(n_nodes, "n_nodes", 1)
    int_at_least(geo_steps, "geo_steps", 0)
    int_at_least(k_steps, "k_steps", 1, " (with 0 no Langevin state is visited and MaxEnergy falls below the "
                                        "lower bound)")
    if isinstance(denoiser, str):
        check_choice(denoiser, ("mlp", "kde"), "denoiser")
        if denoiser == "mlp":
            int_at_least(train_steps, "train_steps", 1)
    check_choice(scheme, ("em", "lm"), "scheme")
    if save_states:
        need = int(n_paths) * int(n_points) * int(k_steps) * 2 * 8
        if need > MAX_STATE_BYTES:
            raise LatentgeoError(f"save_states would keep {n_paths:,} x {n_points * k_steps:,} states "
                                 f"({need / 1024 ** 3:.1f} GiB > {MAX_STATE_BYTES / 1024 ** 3:.0f} GiB); use fewer "
                                 "paths, points or Langevin steps, or drop --save-states")
