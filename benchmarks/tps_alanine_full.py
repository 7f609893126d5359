"""Benchmark: full-atom alanine dipeptide transition paths (issue 20) on the TPS-DPS protocol.

Protocol (sjeong9760/tps-dps): C5 -> C7ax, amber99sb-ildn, vacuum, 300 K, 1 fs, friction 1/ps, 1,000 MD steps per path,
64 paths; THP (final phi, psi within 0.75 rad of the target), heavy-atom RMSD of the final frame to the target after
Kabsch alignment, ETS (highest potential energy along a path, over the hitting paths). Our system: NoCutoff (tps-dps
builds its alanine with PME, 1 nm cutoff), LangevinMiddleIntegrator, ETS relative to the minimised C5 structure.

Rows (all from ``latentgeo.molecules.alanine_full.run_alanine_full``, one run folder per variant under ``--work``):
- ``spacetime_geodesic``: steered MD along the spacetime geodesic (stiffness kT / sigma_n^2, capped), N x K = 1000;
- ``straight_line``: the same restraint schedule along the straight line in aligned Cartesian space;
- ``two_way_shooting``: fixed-length two-way shooting TPS Monte Carlo, first shots from the highest-energy
  transition-segment frames of 8 geodesic paths;
- each variant of ``VARIANTS`` (restraint settings) repeats the geodesic and straight-line rows;
- ``unbiased_md_floor``: 64 unbiased 1,000-step runs from the minimised C5 with fresh velocities (no transition): the
  thermal floor of "max potential energy minus the minimised start" at 300 K, which bounds any ETS from below.
- ``train_12k*``: a denoiser trained 12,000 steps; ``means_arclength_12k*``: that denoiser end to end with restraint
  centres ``D(x_n, sigma_n)`` resampled at equal data-space arc length (``*_over_seeds``: 3-seed summaries);
- ``--md-stage``: the MD_STAGE variants (arc-length centres, stiffness floor, heavy atoms, constant stiffness) on the
  saved geodesics of 3 seeds, each against the straight line with the same stiffness and MD seeds
  (``md_stage_variants``; ``--md-runs train_12k,... --md-key md_stage_variants_train_12k`` for the 12k model).
Published rows are copied from the issue (their ETS is the raw OpenMM potential of their PME system, not ours).

Resumable: a variant whose ``summary.json`` exists in ``--work`` with the same settings is read, not re-run.
Usage: ``OMP_NUM_THREADS=1 LATENTGEO_THREADS=1 python benchmarks/tps_alanine_full.py [--paths 64] [--quick]``.
Writes ``benchmarks/results/tps_alanine_full.json`` (and ``tps_alanine_full.png``, the main run's report figure).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json  # noqa: E402
from latentgeo.molecules.alanine_full import (AlanineFull, _sample_paths, path_metrics,  # noqa: E402
                                              reparam_arclength, restraint_kappas, run_alanine_full)

# MD-stage variants (issue 20 follow-up): the saved geodesic of each seed's run (paths.npz: x_n, D(x_n, sigma_n),
# sigma_n) with other restraint centres / stiffness schedules, against the straight line with the same schedule and
# the same MD seeds. (name, centres: "curve" x_n | "means" D(x_n, sigma_n), reparam, schedule, kappa_floor, cap,
# restrain)
MD_STAGE = [
    ("tether (as main)", "curve", "none", "geodesic", None, 20000.0, "all"),
    ("arclength", "curve", "arclength", "geodesic", None, 20000.0, "all"),
    ("arclength, floor 2000", "curve", "arclength", "geodesic", 2000.0, 20000.0, "all"),
    ("floor 2000", "curve", "none", "geodesic", 2000.0, 20000.0, "all"),
    ("arclength, floor 2000, heavy", "curve", "arclength", "geodesic", 2000.0, 20000.0, "heavy"),
    ("means arclength", "means", "arclength", "geodesic", None, 20000.0, "all"),
    ("means arclength, floor 2000", "means", "arclength", "geodesic", 2000.0, 20000.0, "all"),
    ("means arclength, constant 2000", "means", "arclength", "constant", None, 2000.0, "all"),
    ("arclength, constant 2000", "curve", "arclength", "constant", None, 2000.0, "all"),
    ("means arclength, constant 2000, heavy", "means", "arclength", "constant", None, 2000.0, "heavy"),
    ("means arclength, floor 5000", "means", "arclength", "geodesic", 5000.0, 20000.0, "all"),
    ("means arclength, constant 5000", "means", "arclength", "constant", None, 5000.0, "all"),
    ("means, floor 2000", "means", "none", "geodesic", 2000.0, 20000.0, "all"),
]

PUBLISHED = [
    {"method": "TPS-DPS (published, 3 seeds)", "rmsd_angstrom": "0.47 +- 0.18", "thp_percent": "39.6 +- 28.1",
     "ets_kj_mol": "46.3 +- 10.2", "force_evaluations": "~16M MD steps of training"},
    {"method": "trust-region successor (published)", "rmsd_angstrom": "0.29 +- 0.03", "thp_percent": "61.3 +- 4.1",
     "ets_kj_mol": "49.1 +- 5.8", "force_evaluations": "-"},
    {"method": "PIPS (published)", "rmsd_angstrom": "-", "thp_percent": "43.8", "ets_kj_mol": "28.2 +- 10.9",
     "force_evaluations": "~800M MD steps"},
]
PUBLISHED_NOTE = ("published ETS is the raw potential energy of tps-dps's PME system (no reference subtracted); "
                  "ours is relative to the minimised C5 structure on a NoCutoff system, so the ETS columns are not "
                  "on one scale; THP and RMSD are (same definitions, same 0.75 rad radius, heavy atoms)")

# (name, settings) -- the main run first; every variant is a full run (data, model, geodesic, sampling)
MAIN = dict(n_points=50, k_steps=20)
VARIANTS = [
    ("main", dict(MAIN)),
    ("denoised_centres", dict(MAIN, centres="denoised")),
    ("constant_k2000", dict(MAIN, schedule="constant", kappa_cap=2000.0)),
    ("snr_penalty_100", dict(MAIN, snr_penalty=100.0, snr_lambda=3.0)),
    ("hot_data_1200K", dict(MAIN, data_hot_k=1200.0)),
    ("main_seed1", dict(MAIN, seed=1)),
    ("main_seed2", dict(MAIN, seed=2)),
    # a better-trained denoiser (3x the training steps), geodesic and line only (no shooting / committor)
    ("train_12k", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0)),
    ("train_12k_seed1", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0, seed=1)),
    ("train_12k_seed2", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0, seed=2)),
    # end to end: 12k-step denoiser, restraint centres D(x_n, sigma_n) resampled at equal data-space arc length
    # (the line's centres denoised and resampled the same way), stiffness kT / sigma^2 at the resampled sigma
    ("means_arclength_12k", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0, centres="denoised",
                                 reparam="arclength")),
    ("means_arclength_12k_seed1", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0,
                                       centres="denoised", reparam="arclength", seed=1)),
    ("means_arclength_12k_seed2", dict(MAIN, train_steps=12000, shooting_paths=0, committor_frames=0,
                                       centres="denoised", reparam="arclength", seed=2)),
]


def _row(name, m, data_evals, extra_seconds=0.0):
    if "thp" not in m:
        return {"method": name, "error": m.get("error")}
    fe = m["force_evaluations"]
    return {"method": name, "thp_percent": 100 * m["thp"], "thp_tpsdps_phi_atoms_percent": 100 * m[
        "thp_tpsdps_phi_atoms"], "rmsd_angstrom": m["rmsd_final_angstrom"], "ets_kj_mol": m["ets_kj_mol"],
        "ets_all_paths_kj_mol": m["ets_all_paths_kj_mol"], "ets_absolute_kj_mol": m["ets_absolute_kj_mol"],
        "force_evaluations": {"data": int(data_evals), "sampling": int(fe["sampling"]), "scoring": int(fe["scoring"]),
                              "total_data_plus_sampling": int(data_evals + fe["sampling"])},
        "seconds": m["seconds"] + extra_seconds}


def _floor(n_paths, steps, seed=0):
    sysm = AlanineFull()
    x = sysm.minimize(sysm.pdb_positions)
    e0 = float(sysm.energy(x))
    t0 = time.perf_counter()
    sysm.force_evaluations = 0
    mx = []
    for p in range(n_paths):
        _, en, _ = sysm.free(x, steps, seed=seed + 1000 + p)
        mx.append(en.max() - e0)
    mx = np.array(mx)
    return {"method": "unbiased MD from minimised C5 (no transition; thermal floor of ETS)",
            "max_energy_minus_start_kj_mol": {"mean": float(mx.mean()), "std": float(mx.std()), "n": n_paths},
            "force_evaluations": {"sampling": n_paths * steps}, "seconds": time.perf_counter() - t0}


def _se_over(x):
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None,
            "per_seed": x.tolist()}


def md_stage_variants(work: Path, runs=("main", "main_seed1", "main_seed2"), n_paths: int = 64, k_steps: int = 20,
                      only=None) -> dict:
    """Every MD_STAGE variant on the saved geodesic of each run in ``runs``: 64 steered paths along the (possibly
    reparametrised) geodesic centres and 64 along the straight line, same stiffness, same MD seeds."""
    systems = {r: AlanineFull(restrain=r) for r in ("all", "heavy")}
    out = {}
    for name, cen, rep_, sched, floor, cap, restr in MD_STAGE:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        per = []
        for run in runs:
            z = np.load(work / run / "paths.npz")
            zl = np.load(work / run / "paths_straight_line.npz")
            summ = json.loads((work / run / "summary.json").read_text())
            e_start = summ["e_start_kj_mol"]
            line = zl["geodesic_xs"]
            start, target = line[0].astype(np.float64), line[-1].astype(np.float64)
            c = z["geodesic_xs"] if cen == "curve" else z["geodesic_means"]
            sig = z["geodesic_sigmas"]
            if rep_ == "arclength":
                c, sig = reparam_arclength(c, sig)
            kap = restraint_kappas(sig, 300.0, 1.0, cap, sched, floor)
            sysm = systems[restr]
            seed = int(summ["seed"]) * 1000 + 500
            res = {}
            for curve, cc in (("geodesic", c), ("line", line)):
                pos, en = _sample_paths(sysm, start, np.asarray(cc, dtype=np.float64), kap, k_steps, n_paths, seed,
                                        lambda m: None, curve)
                res[curve] = path_metrics(pos, en, target, e_start)
            a, b = np.array(res["geodesic"]["ets_per_path"]), np.array(res["line"]["ets_per_path"])
            spacing = np.linalg.norm(np.diff(np.asarray(c).reshape(len(c), -1), axis=0), axis=1) * 10
            per.append({"run": run, "res": res, "diff": float(a.mean() - b.mean()),
                        "diff_se": math.sqrt(a.var() / len(a) + b.var() / len(b)),
                        "centre_spacing_angstrom_max_over_mean": float(spacing.max() / spacing.mean()),
                        "kappa_min": float(kap.min()), "kappa_max": float(kap.max())})
        row = {"centres": cen, "reparam": rep_, "schedule": sched, "kappa_floor": floor, "kappa_cap": cap,
               "restrain": restr, "seeds": len(per), "seconds": time.perf_counter() - t0}
        for curve in ("geodesic", "line"):
            row[curve] = {"thp_percent": _se_over([100 * p["res"][curve]["thp"] for p in per]),
                          "rmsd_angstrom": _se_over([p["res"][curve]["rmsd_final_angstrom"]["mean"] for p in per]),
                          "ets_kj_mol": _se_over([p["res"][curve]["ets_kj_mol"]["mean"] for p in per
                                                  if p["res"][curve]["ets_kj_mol"]["mean"] is not None]),
                          "ets_all_paths_kj_mol": _se_over([p["res"][curve]["ets_all_paths_kj_mol"]["mean"]
                                                           for p in per])}
        d = np.array([p["diff"] for p in per])
        se = math.sqrt(sum(p["diff_se"] ** 2 for p in per)) / len(per)
        row["geodesic_minus_line_ets_all_paths"] = {
            "mean": float(d.mean()), "se_paths": se, "se_over_seeds": _se_over(d)["se"], "per_seed": d.tolist(),
            "per_seed_se": [p["diff_se"] for p in per],
            "geodesic_better_by_more_than_se": bool(-d.mean() > max(se, _se_over(d)["se"] or 0.0))}
        row["centre_spacing_max_over_mean"] = [p["centre_spacing_angstrom_max_over_mean"] for p in per]
        row["kappa_range"] = [min(p["kappa_min"] for p in per), max(p["kappa_max"] for p in per)]
        out[name] = row
        g, ln = row["geodesic"], row["line"]
        print(f"[md-stage] {name}: geo ETS {g['ets_kj_mol']['mean']:.1f} THP {g['thp_percent']['mean']:.0f} | line "
              f"{ln['ets_kj_mol']['mean']:.1f} THP {ln['thp_percent']['mean']:.0f} | diff(all) {d.mean():+.1f} "
              f"+- {se:.1f} (seeds {d.round(1).tolist()}) {row['seconds']:.0f}s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", default=str(ROOT / "runs" / "tps_alanine_full"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tps_alanine_full.json"))
    ap.add_argument("--only", default=None, help="comma list of variant names to run")
    ap.add_argument("--md-stage", action="store_true", help="only the MD-stage variants on the saved geodesics of "
                    "main, main_seed1, main_seed2 (run those first); merged into --out")
    ap.add_argument("--md-only", default=None, help="';'-separated MD-stage variant names")
    ap.add_argument("--md-runs", default="main,main_seed1,main_seed2", help="runs whose saved geodesic is used")
    ap.add_argument("--md-key", default="md_stage_variants", help="JSON key the MD-stage rows go to")
    args = ap.parse_args()
    if args.md_stage:
        res = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        prev = res.get(args.md_key, {})
        prev.update(md_stage_variants(Path(args.work), runs=tuple(args.md_runs.split(",")), n_paths=args.paths,
                                      only=set(args.md_only.split(";")) if args.md_only else None))
        res[args.md_key] = prev
        res["md_stage_note"] = ("saved geodesic of seeds 0, 1, 2 (x_n, D(x_n, sigma_n), sigma_n); 64 paths per curve "
                                "and seed, 50 points x 20 steps; the line gets the same stiffness and MD seeds; "
                                "ETS means over seeds +- SE over seeds; geodesic_minus_line: all-paths ETS, pooled "
                                "over seeds, se_paths from the path spread")
        atomic_write_json(args.out, res)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"protocol": None, "variants": {}, "published": PUBLISHED, "published_note": PUBLISHED_NOTE}
    if Path(args.out).exists():  # keep the MD-stage section (written by --md-stage)
        old = json.loads(Path(args.out).read_text())
        results.update({k: v for k, v in old.items() if k.startswith("md_stage")})
    only = set(args.only.split(",")) if args.only else None
    for name, settings in VARIANTS:
        if only and name not in only:
            continue
        folder = work / name
        key = {"paths": args.paths, "quick": args.quick, **settings}
        prev = folder / "summary.json"
        if prev.exists() and json.loads((folder / "bench_key.json").read_text() if (folder / "bench_key.json")
                                        .exists() else "{}") == key:
            s = json.loads(prev.read_text())
            print(f"[{name}] reused {prev}", flush=True)
        else:
            t = time.time()
            kw = dict(settings)
            s = run_alanine_full(args.paths, str(folder), quick=args.quick, seed=kw.pop("seed", 0),
                                 progress=lambda m, t=t: print(f"[{name}] {time.time() - t:7.1f}s {m}", flush=True),
                                 **kw)
            atomic_write_json(folder / "bench_key.json", key)
        results["protocol"] = results["protocol"] or s["protocol"]
        d_ev = s["force_evaluations"]["data"]
        stage = s["seconds_split"]
        shared = stage.get("data", 0) + stage.get("train", 0) + stage.get("geodesic", 0)
        rows = [_row(f"{name}: {k}", m, d_ev, shared if k == "spacetime_geodesic" else 0.0)
                for k, m in s["methods"].items()]
        for r in rows:
            if r["method"].endswith("two_way_shooting") and "force_evaluations" in r:
                # its first shots start from 8 geodesic paths: their MD steps and the data behind them count too
                g_m = s["methods"]["spacetime_geodesic"]
                r["force_evaluations"]["sampling"] += min(8, g_m["n_paths"]) * g_m["frames_per_path"]
                r["force_evaluations"]["total_data_plus_sampling"] = (r["force_evaluations"]["data"]
                                                                      + r["force_evaluations"]["sampling"])
                r["note"] = ("seeded by 8 geodesic paths (their 8,000 MD steps and the data/model/geodesic behind "
                             "them are counted; their wall time is not)")
                r["shooting"] = s["methods"]["two_way_shooting"].get("shooting")
        g, ln = s["methods"]["spacetime_geodesic"], s["methods"].get("straight_line")
        cmp = None
        if ln is not None:
            a, b = np.array(g["ets_per_path"]), np.array(ln["ets_per_path"])
            se = math.sqrt(a.var() / len(a) + b.var() / len(b))
            cmp = {"ets_all_paths_geodesic_minus_line": float(a.mean() - b.mean()), "standard_error": se,
                   "geodesic_better_by_more_than_se": bool(b.mean() - a.mean() > se)}
        results["variants"][name] = {
            "settings": settings, "rows": rows, "geodesic_vs_straight_line_ets": cmp,
            "committor": s["committor"], "model_quality": s["model_quality"],
            "energy_recheck_max_abs_kj_mol": s["energy_recheck_max_abs_kj_mol"],
            "geodesic": {k: s["geodesic"][k] for k in ("energy", "length", "seconds", "sigma_max_angstrom",
                                                       "kappa_min", "kappa_max")},
            "force_evaluations": s["force_evaluations"], "seconds_total": s["seconds"],
            "seconds_split": s["seconds_split"], "platform": s["platform"]}
        if name == "main" and (folder / "report.png").exists():
            shutil.copyfile(folder / "report.png", Path(args.out).with_suffix(".png"))
        atomic_write_json(args.out, results)
    for group, base in (("main_over_seeds", "main"), ("train_12k_over_seeds", "train_12k"),
                        ("means_arclength_12k_over_seeds", "means_arclength_12k")):
        names = (base, base + "_seed1", base + "_seed2")
        seeds = [results["variants"][k] for k in names if k in results["variants"]]
        if len(seeds) < 2:
            continue
        # per-seed means, then mean +- std over seeds (the published rows' convention) and the SE over seeds
        over = {}
        for meth in ("spacetime_geodesic", "straight_line", "two_way_shooting"):
            vals = {"thp_percent": [], "rmsd_angstrom": [], "ets_kj_mol": []}
            for v in seeds:
                r = next((r for r in v["rows"] if r["method"].endswith(meth) and "thp_percent" in r), None)
                if r is None or r["ets_kj_mol"]["mean"] is None:
                    continue
                vals["thp_percent"].append(r["thp_percent"])
                vals["rmsd_angstrom"].append(r["rmsd_angstrom"]["mean"])
                vals["ets_kj_mol"].append(r["ets_kj_mol"]["mean"])
            over[meth] = {k: {"mean": float(np.mean(x)), "std_over_seeds": float(np.std(x)), "seeds": len(x),
                              "se_over_seeds": float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None}
                          for k, x in vals.items() if x}
        cmps = [v["geodesic_vs_straight_line_ets"] for v in seeds if v["geodesic_vs_straight_line_ets"]]
        if cmps:
            d = np.array([c["ets_all_paths_geodesic_minus_line"] for c in cmps])
            over["geodesic_minus_line_ets_all_paths"] = {
                "mean": float(d.mean()), "per_seed": d.tolist(),
                "se_paths": float(math.sqrt(sum(c["standard_error"] ** 2 for c in cmps)) / len(cmps)),
                "se_over_seeds": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None}
        results[group] = over
    results["unbiased_md_floor"] = _floor(args.paths, 1000 if not args.quick else 100)
    main_v = results["variants"].get("main")
    if main_v:
        geo = next(r for r in main_v["rows"] if r["method"].endswith("spacetime_geodesic"))
        total = geo["force_evaluations"]["total_data_plus_sampling"]
        results["goals"] = {
            "thp_above_61_percent": {"value": geo["thp_percent"], "met": geo["thp_percent"] > 61},
            "rmsd_below_0.3_angstrom": {"value": geo["rmsd_angstrom"]["mean"],
                                        "met": geo["rmsd_angstrom"]["mean"] < 0.3},
            "ets_at_most_45_kj_mol": {"value": geo["ets_kj_mol"]["mean"],
                                      "met": geo["ets_kj_mol"]["mean"] is not None and geo["ets_kj_mol"]["mean"] <= 45,
                                      "note": "relative to the minimised start; the unbiased-MD floor row shows the "
                                              "thermal maximum alone exceeds 45 at 300 K over 1,000 steps"},
            "at_most_16M_force_evaluations": {"value": total, "met": total <= 16_000_000},
            "64_paths_under_60_min_on_2_cores": {"value_seconds": main_v["seconds_total"],
                                                 "met": main_v["seconds_total"] < 3600},
            "geodesic_beats_line_on_ets_by_more_than_se": main_v["geodesic_vs_straight_line_ets"],
        }
    atomic_write_json(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k in ("goals", "unbiased_md_floor")}, indent=1))


if __name__ == "__main__":
    main()
