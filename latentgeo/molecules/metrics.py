"""The transition-path metrics the TPS literature reports, for any sampler's paths (ours and the baselines).

Variational-Doob (Du et al., Doob's Lagrangian, ``plainerman/Variational-Doob``: ``eval/path_metrics.py``,
``tps_baseline*.py``) reports MaxEnergy mean +- std, the best path's MaxEnergy and a curve "minimum energy of the best
path so far vs number of potential calls"; TPS-DPS (Seo et al., diffusion path samplers, ``kiyoung98/tps-dps``:
``*/utils/metrics.py``) reports THP (target hit percentage), ETP (MaxEnergy over the paths that hit the target) and
the final state's distance to the target. :func:`tps_metrics` computes all of them with these definitions.

P paths, path ``p`` a sequence of states ``x_{p,0..T-1}``; ``U`` is the potential's SCORING energy
(:meth:`~latentgeo.molecules.Potential.score_energy`: the alanine TABLE at the nearest grid point with angles
wrapped; the analytic Mueller-Brown energy / 10 in kT):

- ``MaxEnergy_p = max_t U(x_{p,t})`` over every state given, or the per-path values passed as ``max_energy`` (for the
  spacetime sampler: the strict maximum over EVERY annealed-Langevin state, tracked during sampling, of which the
  stored frames are a subset). Reported: mean, std (population, ``ddof = 0``, like numpy and the peers' ``jnp.std``),
  min (the best path), median.
- ``Barrier_p = MaxEnergy_p - min(U(start), U(end))``, with ``U`` at the two state CENTRES (the named minima, not the
  paths' own end states): the height of the path's highest point above the lower of the two end states. One
  constant shift of MaxEnergy, so its std equals MaxEnergy's.
- Target basin and reach (TPS-DPS's THP): path ``p`` reaches the target when its FINAL state lies within ``radius``
  of the target centre ``end``: Euclidean distance in the two coordinates, differences wrapped into ``[-pi, pi)`` on
  the torus. Radius (TPS-DPS's values): 0.75 rad for alanine dipeptide (their (phi, psi) hit test), 0.5 for 2-D
  potentials (their synthetic systems, Mueller-Brown among them). ``reached_fraction = n_reached / P``.
  ``reached_fraction_by_radius`` adds Variational-Doob's state sizes (20 degrees = 0.349 rad in (phi, psi) for
  alanine, 0.1 for Mueller-Brown), which are far tighter than a thermal basin at kT = 1.
- ``max_energy_reached_*`` (TPS-DPS's ETP): mean / std of ``MaxEnergy_p`` over the reaching paths (None if none).
- ``final_distance_*`` (TPS-DPS's RMSD, in 2-D a distance): mean / std of the final state's distance to ``end``.
- ``n_energy_evals``: energy-gradient evaluations the method spent (points at which ``grad U`` was evaluated,
  :attr:`~latentgeo.molecules.Potential.n_grad_evals`; scoring look-ups are not counted). Spacetime sampler:
  training-data generation + annealed Langevin (the geodesic costs denoiser calls, no energy); two-way shooting
  (as :func:`~latentgeo.molecules.run.run_tps` runs it): the string method that supplies its initial shooting point
  + every integrated state, initialisation and burn-in included.
- Best-path curve (Variational-Doob's): points ``(E_k, B_k)``: once ``E_k`` evaluations have been spent, the best
  (lowest) MaxEnergy among the TRANSITION paths completed so far is ``B_k``: paths that reach the target as above
  (a path that never leaves the start basin has a low maximum and is no transition; it costs evaluations but is no
  candidate). Two-way shooting records it during sampling over its reactive paths (its states are balls inside the
  target radius, so they reach by this definition too). Non-increasing; stored at the first point, every
  point where ``B`` drops, and the last point (a step function; :func:`best_at` reads it at any budget).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from latentgeo.errors import LatentgeoError

__all__ = ["TPSMetrics", "tps_metrics", "best_so_far", "best_at", "equal_evaluations", "target_radius",
           "doob_state_radius", "DEFINITIONS"]

#: One-line definitions, written next to the numbers (summary.json, benchmark JSON).
DEFINITIONS = {
    "max_energy": "per path, the maximum scoring energy over every state of the path (spacetime sampler: every "
                  "annealed-Langevin state); mean / std (ddof 0) / min (best path) / median over paths",
    "barrier": "per path, MaxEnergy - min(U(start), U(end)), U = scoring energy at the two state centres",
    "reached": "the path's FINAL state lies within target_radius of the target centre (Euclidean, angles wrapped); "
               "TPS-DPS's target hit percentage: radius 0.75 rad for alanine, 0.5 for 2-D potentials; "
               "reached_fraction_by_radius adds Variational-Doob's state radius (alanine 20 deg = 0.349 rad, "
               "Mueller-Brown 0.1)",
    "max_energy_reached": "mean / std of MaxEnergy over the paths that reach the target (TPS-DPS's ETP)",
    "final_distance": "mean / std of the final state's distance to the target centre (TPS-DPS's RMSD in 2-D)",
    "n_energy_evals": "energy-gradient evaluations spent by the method (data generation included for the spacetime "
                      "sampler; for two-way shooting the string method giving its initial shooting point, the "
                      "initialisation and burn-in included); scoring is not counted",
    "curve": "best (lowest) MaxEnergy among the transition paths (reaching the target) completed so far vs "
             "cumulative energy-gradient evaluations (Variational-Doob's 'minimum energy of best path so far'); "
             "non-increasing step function",
    "max_energy_reached_min": "the best transition path's MaxEnergy (the curve's last value)",
}


def target_radius(potential) -> float:
    """TPS-DPS's target radius: 0.75 rad on a periodic (dihedral) surface, 0.5 otherwise."""
    return 0.75 if getattr(potential, "period", None) is not None else 0.5


def doob_state_radius(potential) -> float:
    """Variational-Doob's state radius: 20 degrees on a periodic (dihedral) surface, 0.1 otherwise (Mueller-Brown)."""
    return math.radians(20.0) if getattr(potential, "period", None) is not None else 0.1


@dataclass
class TPSMetrics:
    """Output of :func:`tps_metrics` (definitions: module docstring; :meth:`to_dict` for JSON)."""

    n_paths: int
    max_energy_mean: float
    max_energy_std: float
    max_energy_min: float
    max_energy_median: float
    energy_start: float
    energy_end: float
    reference_energy: float
    barrier_mean: float
    barrier_std: float
    barrier_min: float
    target_radius: float
    n_reached: int
    reached_fraction: float
    max_energy_reached_mean: Optional[float]
    max_energy_reached_std: Optional[float]
    max_energy_reached_min: Optional[float]
    final_distance_mean: float
    final_distance_std: float
    n_energy_evals: int
    reached_fraction_by_radius: Dict[str, float] = field(default_factory=dict)
    lower_bound: Optional[float] = None
    max_energy_mean_minus_lower_bound: Optional[float] = None
    curve: Optional[Dict[str, list]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def best_so_far(max_energies: Sequence[float], evaluations: Sequence[int]) -> Dict[str, list]:
    """The best-path curve from paths in completion order.

    Args:
        max_energies: ``[k]`` MaxEnergy of each completed path (or of the best of a batch completing together;
            ``inf`` for a point at which no path had completed yet).
        evaluations: ``[k]`` cumulative energy-gradient evaluations at which each completed (non-decreasing).

    Returns:
        ``{"evaluations": [...], "best_max_energy": [...]}``: the running minimum at its first finite point, at every
        point where it drops, and at the last point (exact as a step function; non-increasing).
    """
    m = _np(max_energies).reshape(-1)
    e = np.asarray(evaluations, dtype=np.int64).reshape(-1)
    if m.shape != e.shape:
        raise LatentgeoError(f"max_energies {m.shape} and evaluations {e.shape} differ in length; pass one "
                             "evaluation count per completed path")
    if e.size and (np.diff(e) < 0).any():
        raise LatentgeoError("evaluations must be non-decreasing; pass cumulative evaluation counts, in the order "
                             "the paths completed")
    if np.isnan(m).any():
        raise LatentgeoError("max_energies contain NaN; drop the paths whose MaxEnergy is NaN (use inf for a point at "
                             "which no path had completed yet)")
    best = np.minimum.accumulate(m) if m.size else m
    fin = np.isfinite(best)
    if not fin.any():
        return {"evaluations": [], "best_max_energy": []}
    first = int(np.argmax(fin))
    keep = [first] + [i for i in range(first + 1, best.size) if best[i] < best[i - 1]]
    if keep[-1] != best.size - 1:
        keep.append(best.size - 1)
    return {"evaluations": [int(e[i]) for i in keep], "best_max_energy": [float(best[i]) for i in keep]}


def best_at(curve: Mapping[str, Sequence], budget: float, total: Optional[float] = None) -> Optional[float]:
    """Best MaxEnergy of a curve once ``budget`` evaluations are spent (None before its first path, or beyond
    ``total``, the evaluations the method actually spent)."""
    ev = np.asarray(curve.get("evaluations", []), dtype=np.float64)
    if total is not None and budget > total:
        return None
    k = int(np.searchsorted(ev, budget, side="right")) - 1
    return None if k < 0 else float(curve["best_max_energy"][k])


def equal_evaluations(methods: Mapping[str, Mapping[str, Any]], n_budgets: int = 8) -> Dict[str, Any]:
    """Best MaxEnergy of several methods side by side at equal evaluation budgets.

    Args:
        methods: ``name -> metrics dict`` (:meth:`TPSMetrics.to_dict`) with a ``curve`` and ``n_energy_evals``.
        n_budgets: budgets on a geometric grid from the earliest first path to the common budget (the smallest
            ``n_energy_evals``), the common budget included (a method without a path yet reads None).

    Returns:
        ``{"common_budget": B, "at_common_budget": {name: best}, "rows": [{"evaluations": b, name: best|None}]}``.
    """
    ms = {k: v for k, v in methods.items() if v.get("curve") and v["curve"]["evaluations"]}
    if len(ms) < 1:
        return {"common_budget": None, "at_common_budget": {}, "rows": []}
    common = float(min(v["n_energy_evals"] for v in ms.values()))
    lo = float(min(v["curve"]["evaluations"][0] for v in ms.values()))
    if lo >= common or lo <= 0:
        budgets = [common]
    else:
        budgets = list(np.geomspace(lo, common, max(int(n_budgets), 1)))
    rows = [{"evaluations": int(round(b)), **{k: best_at(v["curve"], round(b), v["n_energy_evals"])
                                              for k, v in ms.items()}} for b in budgets]
    return {"common_budget": int(common),
            "at_common_budget": {k: best_at(v["curve"], common, v["n_energy_evals"]) for k, v in ms.items()},
            "rows": rows}


def tps_metrics(paths_or_states, potential, start: Sequence[float], end: Sequence[float], *, n_energy_evals: int,
                max_energy=None, radius: Optional[float] = None, radii: Optional[Sequence[float]] = None,
                path_evals: Optional[Sequence[int]] = None, curve: Optional[Mapping[str, Sequence]] = None,
                lower_bound: Optional[float] = None) -> TPSMetrics:
    """Metrics of a set of transition paths (definitions: module docstring).

    Args:
        paths_or_states: ``[P, T, 2]`` the paths' states in time order (frames, or every state); the last one is the
            path's final state.
        potential: the system (its ``score_energy`` scores, its ``period`` wraps distances).
        start, end: the two state centres (``end`` is the target).
        n_energy_evals: the energy-gradient evaluations the method spent.
        max_energy: ``[P]`` per-path MaxEnergy computed elsewhere (the spacetime sampler's strict maximum over every
            Langevin state); must be at least the maximum over the given states (it covers them). Default: the
            maximum over ``paths_or_states``.
        radius: target radius (default :func:`target_radius`: TPS-DPS's 0.75 rad for alanine / 0.5 in 2-D).
        radii: extra radii for ``reached_fraction_by_radius`` (default: Variational-Doob's, :func:`doob_state_radius`).
        path_evals: ``[P]`` cumulative evaluations at which each path completed (paths in completion order) -> the
            best-path curve over the reaching paths; or pass ``curve`` recorded during sampling (e.g.
            ``two_way_shooting(record_curve=True)``).
        lower_bound: optional grid minimax bound, for ``max_energy_mean_minus_lower_bound``.
    """
    p = _np(paths_or_states)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise LatentgeoError(f"paths have shape {p.shape}; pass [P, T, 2] with P, T >= 1")
    if isinstance(n_energy_evals, bool) or int(n_energy_evals) != n_energy_evals or n_energy_evals < 0:
        raise LatentgeoError(f"n_energy_evals must be a non-negative integer, got {n_energy_evals!r}; "
                             "pass the number of energy-gradient evaluations spent (0 or more)")
    P = p.shape[0]
    over_states = potential.score_energy(p).max(axis=1)
    if max_energy is None:
        me = over_states
    else:
        me = _np(max_energy).reshape(-1)
        if me.shape != (P,):
            raise LatentgeoError(f"max_energy has shape {me.shape}; pass one value per path ({P})")
        if (me < over_states - 1e-9).any():
            raise LatentgeoError("max_energy is below the maximum over the given states for some path; it must be "
                                 "the maximum over every state (a superset of paths_or_states)")
    if not np.isfinite(me).all():
        raise LatentgeoError("MaxEnergy is not finite for some path; drop paths with NaN/inf coordinates (a diverged "
                             "sampler: lower its step size) or NaN/inf max_energy values")
    ends = potential.score_energy(np.asarray([start, end], dtype=np.float64))
    ref = float(min(ends[0], ends[1]))
    d = p[:, -1] - np.asarray(end, dtype=np.float64)
    period = getattr(potential, "period", None)
    if period is not None:
        d = np.mod(d + period / 2, period) - period / 2
    dist = np.linalg.norm(d, axis=-1)
    r = float(radius) if radius is not None else target_radius(potential)
    if not r > 0:
        raise LatentgeoError(f"radius must be positive, got {radius!r}; "
                             "pass a positive radius, or None for the default")
    hit = dist < r
    extra = sorted({r, *(float(v) for v in (radii if radii is not None else (doob_state_radius(potential),)))})
    if curve is None and path_evals is not None:
        curve = best_so_far(np.where(hit, me, np.inf), path_evals)
    elif curve is not None:
        curve = {"evaluations": [int(v) for v in curve["evaluations"]],
                 "best_max_energy": [float(v) for v in curve["best_max_energy"]]}
    lb = None if lower_bound is None else float(lower_bound)
    return TPSMetrics(
        n_paths=int(P), max_energy_mean=float(me.mean()), max_energy_std=float(me.std()),
        max_energy_min=float(me.min()), max_energy_median=float(np.median(me)),
        energy_start=float(ends[0]), energy_end=float(ends[1]), reference_energy=ref,
        barrier_mean=float(me.mean() - ref), barrier_std=float((me - ref).std()), barrier_min=float(me.min() - ref),
        target_radius=r, n_reached=int(hit.sum()), reached_fraction=float(hit.mean()),
        max_energy_reached_mean=float(me[hit].mean()) if hit.any() else None,
        max_energy_reached_std=float(me[hit].std()) if hit.any() else None,
        max_energy_reached_min=float(me[hit].min()) if hit.any() else None,
        final_distance_mean=float(dist.mean()), final_distance_std=float(dist.std()),
        n_energy_evals=int(n_energy_evals),
        reached_fraction_by_radius={f"{v:.4g}": float((dist < v).mean()) for v in extra},
        lower_bound=lb, max_energy_mean_minus_lower_bound=None if lb is None else float(me.mean() - lb),
        curve=curve,
    )
