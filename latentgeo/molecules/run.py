"""One complete TPS run with its baselines and output files (what ``latentgeo tps`` and the benchmark call).

Systems:
- ``alanine``: :class:`AlanineTable` (kT = 1 in table units), states ``ALANINE_START`` -> ``ALANINE_END``, scored on
  the TABLE; lower bound: grid minimax on the periodic 89 x 89 grid (36.34).
- ``mueller-brown``: :class:`MuellerBrown` with ``scale = 0.1`` (i.e. kT = 10 in the standard units; energies are
  reported in kT), from the deepest minimum (-0.558, 1.442) to (0.623, 0.028); lower bound: minimax on a 400 x 400
  grid of the analytic surface (a grid estimate of the saddle energy).
"""
from __future__ import annotations

import io
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from latentgeo.errors import LatentgeoError, check_choice
from latentgeo.molecules.potentials import wrap_angle

__all__ = ["SYSTEMS", "make_system", "run_tps", "tps_result_metrics", "sampler_curve_evals"]

SYSTEMS = ("alanine", "mueller-brown")

# per-system defaults of transition_paths (overridable)
_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "alanine": dict(data_step=1e-3, log_snr=4.0, step=4e-4),
    "mueller-brown": dict(data_step=1e-3, log_snr=4.0, step=2e-4),
}


def make_system(name: str):
    """``(potential, start, end, lower_bound)`` of a named system."""
    from latentgeo.molecules.bounds import grid_lower_bound, minimax_path
    from latentgeo.molecules.potentials import (ALANINE_END, ALANINE_START, MUELLER_BROWN_MINIMA, AlanineTable,
                                                MuellerBrown)

    check_choice(name, SYSTEMS, "system")
    if name == "alanine":
        pot = AlanineTable()
        return pot, ALANINE_START, ALANINE_END, grid_lower_bound(pot, ALANINE_START, ALANINE_END)
    pot = MuellerBrown(scale=0.1)
    start, end = MUELLER_BROWN_MINIMA[0][0], MUELLER_BROWN_MINIMA[1][0]
    xs, ys, u = pot.grid(400)
    i0, j0 = np.argmin(np.abs(xs - start[0])), np.argmin(np.abs(ys - start[1]))
    i1, j1 = np.argmin(np.abs(xs - end[0])), np.argmin(np.abs(ys - end[1]))
    lb, _ = minimax_path(u, (i0, j0), (i1, j1), periodic=False)
    return pot, start, end, lb


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _stats(v: np.ndarray) -> Dict[str, float]:
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}


# two-way shooting MCMC (reduced settings; see latentgeo.molecules.baselines.two_way_shooting). Alanine: state A is
# the 3-rad ball around the start, which takes in the C5 and C7eq basins (their connecting barrier, ~5 kT, is far
# below the ~36 kT transition barrier, so MaxEnergy is unaffected) -- with a 0.5-rad ball, fixed-length paths must
# also wait out the C7eq dwell and acceptance fell to ~0.
_SHOOTING: Dict[str, Dict[str, Any]] = {
    "alanine": dict(n_frames=400, dt=2e-3, radius=(3.0, 0.5), n_chains=100, burn_in=150),
    "mueller-brown": dict(n_frames=1000, dt=5e-4, radius=(0.3, 0.3), n_chains=100, burn_in=50, init_frame=500),
}
# Mueller-Brown: the initial shots start from the MIDDLE frame (init_frame = T // 2; both halves run 500 steps): from
# the string's highest image (the A-side saddle) one half must reach B through the intermediate minimum, which the
# default short forward half (T // 20 steps) almost never does -- 45 of 100 chains found an initial path in 50 rounds,
# and those rounds were 5M of the 7.6M evaluations. Alanine keeps the default (its start state is a 3-rad ball).
_SHOOTING_QUICK: Dict[str, Dict[str, Any]] = {
    "alanine": dict(n_chains=20, burn_in=5, n_frames=300),
    "mueller-brown": dict(n_chains=20, burn_in=5, max_init_rounds=5),
}


def _shooting_baseline(pot, start, end, string, system, n_paths, quick, seed, lower_bound=None, string_evals=0):
    """Two-way shooting at reduced settings: ``(summary dict, metrics dict or None)``; the best-path curve is
    recorded during sampling. The metrics count ``string_evals`` too (the string method that supplies the initial
    shooting point, its highest image), in ``n_energy_evals`` and before the curve's first point; the summary's
    ``energy_evaluations`` counts the shooting alone, as before."""
    from latentgeo.molecules.baselines import two_way_shooting
    from latentgeo.molecules.metrics import tps_metrics
    from latentgeo.molecules.tps import max_energy

    kw = dict(_SHOOTING[system])
    if quick:
        kw.update(_SHOOTING_QUICK[system])
    top = string[int(np.argmax(pot.score_energy(string.numpy())))]
    pot.reset_counter()
    try:
        out = two_way_shooting(pot, start, end, n_paths=n_paths, init_point=top, seed=seed, record_curve=True, **kw)
    except LatentgeoError as exc:
        return {"error": str(exc), "energy_evaluations": int(pot.reset_counter()), "settings": _jsonable(kw)}, None
    n = pot.reset_counter()
    me = max_energy(pot, out["paths"])
    off = int(string_evals)
    curve = {"evaluations": [off + e for e in out["curve"]["evaluations"]],
             "best_max_energy": out["curve"]["best_max_energy"]}
    met = tps_metrics(out["paths"], pot, start, end, n_energy_evals=int(n) + off, curve=curve,
                      lower_bound=lower_bound).to_dict()
    return ({"max_energy_mean": float(me.mean()), "max_energy_std": float(me.std()), "n_paths": int(len(me)),
             "energy_evaluations": int(n), "acceptance": float(out["acceptance"]), "chains": int(out["chains"]),
             "chains_moved_fraction": float(out["accepted_any"].float().mean()),
             "iterations": int(out["iterations"]), "settings": _jsonable(kw),
             "note": "fixed-length two-way shooting, kT = 1, chains started from reactive paths shot from the string "
                     "method's highest image (counted), shooting frames uniform over the transition region with "
                     "Metropolis correction; scored over every frame (all are Langevin states); REDUCED settings"},
            met)


def sampler_curve_evals(res) -> np.ndarray:
    """Cumulative evaluations at which each spacetime-sampler path completes, paths counted one after another.

    The P paths are integrated as one batch and all complete at the last step; each costs exactly ``N * K``
    evaluations and, given the geodesic, they are independent, so the index order is a valid sequential order:
    path ``i`` (0-based) completes at ``data + (i + 1) * N * K`` (the data generation is paid before the first).
    """
    per = int(res.info.get("states_per_path", 0))
    return int(res.evals["data"]) + per * (np.arange(len(res.max_energy), dtype=np.int64) + 1)


def tps_result_metrics(res, pot, start, end, lower_bound=None) -> dict:
    """:func:`~latentgeo.molecules.metrics.tps_metrics` of a :class:`~latentgeo.molecules.tps.TPSResult` (strict
    MaxEnergy over every Langevin state, all evaluations counted, the best-path curve)."""
    from latentgeo.molecules.metrics import tps_metrics

    return tps_metrics(res.paths, pot, start, end, n_energy_evals=int(res.evals["total"]), max_energy=res.max_energy,
                       path_evals=sampler_curve_evals(res), lower_bound=lower_bound).to_dict()


def _jsonable(kw):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def run_tps(system: str, n_paths: int, out: Optional[str] = None, *, quick: bool = False, baselines: bool = True,
            snr_penalty: float = 0.0, avoid=None, avoid_weight: float = 100.0, seed: int = 0,
            progress=None, return_result: bool = False, save_states: bool = False, **overrides):
    """Run the pipeline and the baselines on ``system``; write ``out/paths.npz``, ``out/summary.json`` and
    ``out/paths.png`` when ``out`` is given. Returns the summary dict.

    ``paths.npz`` holds ``paths`` ``[P, N, 2]`` (the frames), ``max_energy`` ``[P]`` (strict MaxEnergy over every
    Langevin state), ``max_states`` ``[P, 2]`` (the Langevin state attaining it: re-scoring it with the system's
    scoring energy reproduces ``max_energy`` exactly), ``max_energy_frames`` ``[P]``, ``geodesic_xs`` /
    ``geodesic_sigmas`` and, with ``save_states``, ``all_states`` ``[P, N*K, 2]`` (every Langevin state; its
    per-path maximum score is ``max_energy``). Angles (alanine) are wrapped into ``[-pi, pi)``.
    ``summary["metrics"]``: :mod:`latentgeo.molecules.metrics` for every method run (``methods``: the spacetime
    sampler and, with ``baselines``, two-way shooting, the string method and the straight line), their definitions,
    and the best path's MaxEnergy of the sampler and two-way shooting at equal evaluations (``equal_evaluations``);
    ``out/convergence.png`` draws those two best-path curves.

    ``quick``: tiny settings for smoke tests (small data, 300 training steps, 100 geodesic steps, N = 64, K = 32).
    ``overrides``: any keyword of :func:`~latentgeo.molecules.tps.transition_paths` (``denoiser`` may be a trained
    model to reuse). ``return_result``: return ``(summary, TPSResult, string_path)`` instead of the summary.
    """
    from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json
    from latentgeo.molecules.baselines import densify, straight_path, string_method
    from latentgeo.molecules.metrics import DEFINITIONS, equal_evaluations, tps_metrics
    from latentgeo.molecules.plots import plot_best_curves, plot_paths
    from latentgeo.molecules.tps import max_energy, transition_paths

    check_choice(system, SYSTEMS, "system")
    if out is not None:  # before any work: a results folder that cannot be written fails now, not after the run
        from latentgeo.runfolder import check_output_dir

        check_output_dir(out, "--out")
    pot, start, end, lb = make_system(system)
    kw: Dict[str, Any] = dict(_DEFAULTS[system])
    if quick:
        kw.update(n_chains=400, data_steps=400, train_steps=300, geo_steps=100, n_points=64, k_steps=32)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    res = transition_paths(pot, start, end, n_paths, snr_penalty=snr_penalty, avoid=avoid,
                           avoid_weight=avoid_weight, seed=seed, progress=progress, save_states=save_states, **kw)
    seconds = dict(res.seconds)
    # what paths.npz stores (angles wrapped) and the re-score of it: identical to the reported MaxEnergy
    wrap_np = (lambda a: wrap_angle(np.asarray(a, dtype=np.float64))) if pot.period else \
        (lambda a: np.asarray(a, dtype=np.float64))
    max_states = wrap_np(res.max_states)
    rescored = pot.score_energy(max_states)
    rescore_diff = float(np.max(np.abs(rescored - res.max_energy))) if len(rescored) else 0.0
    n_states = int(res.info.get("states_per_path", 0))
    scoring = ("the alanine TABLE at the nearest grid point, angles wrapped" if system == "alanine"
               else "analytic Mueller-Brown energy / 10, in kT")
    summary: Dict[str, Any] = {
        "system": system,
        "n_paths": int(n_paths),
        "scoring": ("alanine TABLE, nearest grid point, angles wrapped" if system == "alanine"
                    else "analytic Mueller-Brown energy / 10 (kT units)"),
        "max_energy_mean": float(res.max_energy.mean()),
        "max_energy_std": float(res.max_energy.std()),
        "max_energy_note": "strict: maximum over every annealed-Langevin state of each path",
        "max_energy_scoring": {
            "how": (f"per path, the maximum of the scoring energy ({scoring}) over all {n_states} annealed-Langevin "
                    f"states (N x K: the state after every step; the {res.paths.shape[1]} recorded frames are every "
                    "K-th of them); max_energy_mean / max_energy_std are over paths"),
            "rescore": ("paths.npz 'max_states' [P, 2] is, per path, the Langevin state attaining its maximum; "
                        + ("latentgeo.molecules.AlanineTable().score_energy(max_states)" if system == "alanine" else
                           "latentgeo.molecules.MuellerBrown(scale=0.1).score_energy(max_states)")
                        + " reproduces paths.npz 'max_energy' [P] exactly, and its mean is max_energy_mean"),
            "rescore_max_abs_difference": rescore_diff,
            "states_per_path": n_states,
            "all_states_saved": bool(save_states),
        },
        "max_energy_frames_mean": float(res.max_energy_frames.mean()),
        "max_energy_frames_std": float(res.max_energy_frames.std()),
        "max_frame_jump_median": float(np.median(np.linalg.norm(np.diff(res.paths, axis=1), axis=-1).max(1))),
        "reached_fraction": float(res.reached.mean()),
        "reached_fraction_note": "final frame within 0.5 of the end state (metrics.methods.*.reached_fraction uses "
                                 "the peers' target radius; see metrics.definitions)",
        "lower_bound": float(lb),
        "energy_evaluations": int(res.evals["total"]),
        "energy_evaluations_split": {"data": int(res.evals["data"]), "sampling": int(res.evals["sampling"])},
        "geodesic": {**res.info["geodesic"], "sigma_min": float(res.geodesic_sigmas.min()),
                     "sigma_max": float(res.geodesic_sigmas.max()), "sigma_end": res.info["sigma_end"]},
        "settings": {k: (v if isinstance(v, (int, float, str, list, type(None))) else
                         (list(v) if isinstance(v, tuple) else type(v).__name__)) for k, v in kw.items()},
        "constraints": {"snr_penalty": snr_penalty, "snr_lambda": kw.get("snr_lambda", 3.0), "avoid": avoid, "avoid_weight": avoid_weight},
        "seed": seed,
        "machine": f"{platform.node() or 'unknown'} {platform.machine()}, torch threads {torch.get_num_threads()}",
    }
    methods: Dict[str, Any] = {"spacetime_geodesic": tps_result_metrics(res, pot, start, end, lb)}
    string_point = None
    if baselines:
        t1 = time.perf_counter()
        pot.reset_counter()
        string = string_method(pot, start, end, n_images=64, n_iter=500, step=1e-3 if system == "alanine" else 2e-4)
        n_str = pot.reset_counter()
        straight = straight_path(start, end, 256)
        dense = densify(string, 8)[None]
        summary["baselines"] = {
            "string_method": {"max_energy": float(max_energy(pot, dense)[0]),
                              "energy_evaluations": int(n_str), "seconds": time.perf_counter() - t1,
                              "note": "one deterministic minimum-energy path (64 images, 500 iterations), "
                                      "scored on 8x densified segments"},
            "straight_line": {"max_energy": float(max_energy(pot, straight[None])[0])},
            "grid_minimax_lower_bound": float(lb),
        }
        t2 = time.perf_counter()
        tws, tws_m = _shooting_baseline(pot, start, end, string, system, n_paths, quick, seed, lb, n_str)
        summary["baselines"]["two_way_shooting"] = tws
        summary["baselines"]["two_way_shooting"]["seconds"] = time.perf_counter() - t2
        if tws_m is not None:
            methods["two_way_shooting"] = tws_m
        methods["string_method"] = tps_metrics(dense, pot, start, end, n_energy_evals=int(n_str),
                                               path_evals=[int(n_str)], lower_bound=lb).to_dict()
        methods["straight_line"] = tps_metrics(straight[None], pot, start, end, n_energy_evals=0,
                                               lower_bound=lb).to_dict()
        string_point = (int(n_str), methods["string_method"]["max_energy_min"], "string method (one MEP, not sampled)")
        seconds["baselines"] = time.perf_counter() - t1
    else:
        string = None
    summary["metrics"] = {
        "definitions": DEFINITIONS,
        "methods": methods,
        "equal_evaluations": equal_evaluations({k: methods[k] for k in ("spacetime_geodesic", "two_way_shooting")
                                                if k in methods}),
    }
    seconds["total"] = time.perf_counter() - t0
    summary["seconds"] = float(seconds["total"])
    summary["seconds_split"] = seconds
    if out is not None:
        o = Path(out)
        if o.exists() and not o.is_dir():
            raise LatentgeoError(f"--out '{out}' is a file; pass a folder")
        wrapped = pot.wrap(torch.as_tensor(res.paths)).numpy() if pot.period else res.paths
        arrays = dict(paths=wrapped.astype(np.float64), max_energy=np.asarray(res.max_energy, dtype=np.float64),
                      max_states=max_states, max_energy_frames=res.max_energy_frames,
                      geodesic_xs=res.geodesic_xs, geodesic_sigmas=res.geodesic_sigmas)
        if save_states and res.all_states is not None:
            arrays["all_states"] = wrap_np(res.all_states)
        atomic_write_bytes(o / "paths.npz", _npz_bytes(**arrays))
        title = (f"{system}: {n_paths} paths, MaxEnergy {summary['max_energy_mean']:.2f} +- "
                 f"{summary['max_energy_std']:.2f} (bound {lb:.2f})")
        extra = [string.numpy()] if string is not None else []
        marks = [(avoid[0], "forbidden state")] if avoid is not None else []
        png = plot_paths(pot, res.paths, geodesics=[res.geodesic_xs], labels=["spacetime geodesic"], title=title,
                         extra_paths=extra, extra_labels=["string method (MEP)"], marks=marks,
                         vmax=60.0 if system == "alanine" else None)
        atomic_write_bytes(o / "paths.png", png)
        labels = {"spacetime_geodesic": "spacetime geodesic + annealed Langevin", "two_way_shooting":
                  "two-way shooting MCMC (reduced settings)"}
        atomic_write_bytes(o / "convergence.png", plot_best_curves(
            {labels[k]: methods[k]["curve"] for k in labels if k in methods and methods[k].get("curve")},
            title=f"{system}: best path's MaxEnergy vs energy-gradient evaluations", lower_bound=float(lb),
            points=[string_point] if string_point else ()))
        atomic_write_json(o / "summary.json", summary)
    if return_result:
        return summary, res, string
    return summary
