"""Which per-segment objective should a spacetime geodesic minimise: ``"abs"`` or ``"relu"`` (issue 15)?

With segment components ``c_nk = (eta_{n+1} - eta_n)_k (mu_{n+1} - mu_n)_k`` (k over the coordinates of the
sufficient statistic ``(x0, |x0|^2)``) and segment terms ``d_n = sum_k c_nk`` (the symmetrised KL of segment n):

- ``abs``  (latentgeo): ``(N-1)/2 sum_n |d_n|``;
- ``relu`` (the form of the authors' code): ``(N-1)/2 sum_nk max(c_nk, 0)``.

Sections (all through the library: ``latentgeo.spacetime.geodesic(..., objective=...)``):

1. ``exact``: exact Gaussian / Gaussian-mixture denoisers (``GaussianMixture.as_denoiser()``, exact divergence),
   where every d_n is a true KL. For one isotropic Gaussian N(0, c I_n) the posterior family is the isotropic
   Gaussians N(mu, s^2 I_n) with mu = c x / (c + sigma^2), s^2 = c sigma^2 / (c + sigma^2), whose Fisher-Rao geometry
   is hyperbolic: L = sqrt(2n) arccosh(1 + (|mu_1 - mu_2|^2 / (2n) + (s_1 - s_2)^2) / (2 s_1 s_2)) -- a closed-form
   geodesic length to compare with. Reported: energy, length, both objectives' values, negative components, the max
   deviation between the two objectives' curves.
2. ``tps``: alanine-dipeptide transition path sampling (the ``latentgeo.molecules`` pipeline's default settings:
   2000 x 1000 Boltzmann data, the MLP denoiser trained 3000 steps, endpoints at log-SNR 4, N = 128, 10 knots,
   Adam 0.1; annealed Langevin K = 64, step 4e-4, kT = 1) with ``--paths`` paths per objective (default 300), the
   SAME trained denoiser and the same Langevin noise for both objectives (paired), for each ``--seeds`` seed, at
   ``--geo-steps`` (default 1000 and 10000). MaxEnergy is strict (every Langevin state) on the TABLE.
   ``kde``: the same with the training-free exact denoiser of a Gaussian KDE (``denoiser="kde"``), an exact model of
   the same data.
3. ``authors`` (only with ``--authors-repo DIR``, a checkout of github.com/rafalkarczewski/spacetime-geometry): the
   authors' trained alanine checkpoint (their ``MLP`` class is imported from DIR/molecular_experiments, nothing of
   it is copied here), wrapped as ``D(x, sigma) = model(alpha x, log-SNR)`` (VP -> VE), geodesics with both
   objectives, each final curve scored under both objectives, and MaxEnergy as in section 2.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/geodesic_objective.py [--sections exact tps kde authors] [--paths 300]
        [--seeds 0 1 2] [--geo-steps 1000 10000] [--authors-repo DIR] [--quick]

Prints JSON and writes ``benchmarks/results/geodesic_objective.json`` (sections merged into an existing file).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_json  # noqa: E402
from latentgeo.fisher.exact import GaussianMixture  # noqa: E402
from latentgeo.spacetime import geodesic  # noqa: E402
from latentgeo.spacetime.family import objective_terms, segment_components  # noqa: E402

DT = torch.float64
OBJECTIVES = ("abs", "relu")


def _objective_values(D, xs, sigmas, n_probes=None):
    """(N-1)/2 sum_n objective_n of one curve under both objectives, its energy, length, negative components."""
    comp = segment_components(D, xs, sigmas, n_probes=n_probes).detach()
    c = 0.5 * (xs.shape[0] - 1)
    d = comp[..., :-1].sum(-1) + comp[..., -1]
    return {"energy": float(c * d.sum()), "length": float(d.abs().sqrt().sum()),
            **{f"objective_{o}": float(c * objective_terms(comp, o).sum()) for o in OBJECTIVES},
            "negative_components": int((comp < 0).sum()), "components": int(comp.numel()),
            "negative_segments": int((d < 0).sum())}


def _closed_form_length(xa, xb, sigma, c=1.0):
    """Geodesic length between (xa, sigma) and (xb, sigma) for data N(0, c I_n) (hyperbolic geometry, see above)."""
    n = xa.numel()
    a = c / (c + sigma * sigma)
    s0 = math.sqrt(c * sigma * sigma / (c + sigma * sigma))
    du2 = float(((a * xa - a * xb) ** 2).sum()) / (2 * n)
    return math.sqrt(2 * n) * math.acosh(1 + du2 / (2 * s0 * s0))


def _closed_form_sigma_max(xa, xb, sigma, c=1.0):
    """Highest noise level on that geodesic: the top of the hyperbolic semicircle (s = its radius)."""
    n = xa.numel()
    a = c / (c + sigma * sigma)
    s0sq = c * sigma * sigma / (c + sigma * sigma)
    r2 = float(((a * xa - a * xb) ** 2).sum()) / (2 * n) / 4 + s0sq
    return math.sqrt(c * r2 / (c - r2))


def run_exact(steps: int, n_points: int, quick: bool):
    gauss = GaussianMixture(torch.tensor([1.0], dtype=DT), torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT)[None])
    gauss8 = GaussianMixture(torch.tensor([1.0], dtype=DT), torch.zeros(1, 8, dtype=DT), torch.eye(8, dtype=DT)[None])
    mix = GaussianMixture(torch.tensor([0.4, 0.6], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=DT),
                          torch.tensor([[0.1, 0.05], [0.05, 0.2]], dtype=DT))
    mix1 = GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT), torch.tensor([[-1.0], [1.0]], dtype=DT),
                           torch.full((2, 1, 1), 0.05, dtype=DT))
    e8 = torch.zeros(8, dtype=DT)
    cases = [
        ("gaussian_2d_x_move", gauss, torch.tensor([-1.0, 0.0], dtype=DT), torch.tensor([1.0, 0.0], dtype=DT), 0.3),
        ("gaussian_2d_diagonal", gauss, torch.tensor([-1.0, -0.5], dtype=DT), torch.tensor([1.0, 0.7], dtype=DT), 0.3),
        ("gaussian_8d", gauss8, e8 - 0.4, e8 + 0.4, 0.3),
        ("mixture_2d_two_components", mix, torch.tensor([-1.0, 0.5], dtype=DT), torch.tensor([1.0, -0.3], dtype=DT),
         0.3),
        ("mixture_1d_two_modes", mix1, torch.tensor([-1.0], dtype=DT), torch.tensor([1.0], dtype=DT), 0.1),
    ]
    if quick:
        cases = cases[:1]
    rows = []
    for name, gm, a, b, s in cases:
        D = gm.as_denoiser()
        row = {"case": name, "x_a": a.tolist(), "x_b": b.tolist(), "sigma": s, "n_points": n_points, "n_nodes": 8,
               "steps": steps, "lr": 0.05, "divergence": "exact"}
        line = geodesic(D, (a, s), (b, s), n_points=n_points, n_nodes=8, steps=0, n_probes=None)
        row["straight_line"] = _objective_values(D, line.xs, line.sigmas)
        curves = {}
        for obj in OBJECTIVES:
            t0 = time.perf_counter()
            g = geodesic(D, (a, s), (b, s), n_points=n_points, n_nodes=8, steps=steps, lr=0.05, n_probes=None,
                         objective=obj)
            curves[obj] = g
            row[obj] = {**_objective_values(D, g.xs, g.sigmas), "sigma_max": float(g.sigmas.max()),
                        "seconds": time.perf_counter() - t0}
        row["max_x_deviation_abs_vs_relu"] = float((curves["abs"].xs - curves["relu"].xs).reshape(n_points, -1)
                                                   .norm(dim=-1).max())
        row["max_log_snr_deviation_abs_vs_relu"] = float((curves["abs"].lambdas - curves["relu"].lambdas).abs().max())
        if name.startswith("gaussian"):
            L = _closed_form_length(a, b, s)
            row["closed_form"] = {"length": L, "energy": 0.5 * L * L, "sigma_max": _closed_form_sigma_max(a, b, s)}
            for obj in OBJECTIVES:
                row[obj]["length_over_closed_form"] = row[obj]["length"] / L
        row["true_energy_relu_over_abs"] = row["relu"]["energy"] / row["abs"]["energy"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows,
            "note": "every d_n is a true symmetrised KL here, so 'abs' IS the energy; single components c_nk are not "
                    "KLs and are negative on part of every curve (the Fisher-Rao metric's off-diagonal blocks), so "
                    "'relu' minimises an upper bound of the energy and converges to a different, longer curve"}


# ------------------------------------------------------------------------------------------------------------ TPS

def _tps_data_and_denoiser(kind: str, seed: int, quick: bool):
    from latentgeo.molecules.langevin import boltzmann_samples
    from latentgeo.molecules.potentials import AlanineTable
    from latentgeo.molecules.tps import fit_tps_denoiser

    pot = AlanineTable()
    n_chains, data_steps, train_steps = (400, 400, 300) if quick else (2000, 1000, 3000)
    t0 = time.perf_counter()
    samples = boltzmann_samples(pot, n_chains=n_chains, n_steps=data_steps, step=1e-3, kT=1.0,
                                keep_last=min(data_steps, max(data_steps // 2, 1)), thin=max(data_steps // 20, 1),
                                seed=seed)
    t_data = time.perf_counter() - t0
    extra = {"net_kwargs": dict(hidden=64, depth=2, emb_dim=32), "batch_size": 512, "device": "cpu"} \
        if kind == "mlp" else {}
    t0 = time.perf_counter()
    den = fit_tps_denoiser(samples, kind, periodic=True, steps=train_steps, seed=seed, **extra)
    if isinstance(den, torch.nn.Module):
        den = den.to("cpu").eval()
    return pot, den, {"data_seconds": t_data, "train_seconds": time.perf_counter() - t0,
                      "n_chains": n_chains, "data_steps": data_steps, "train_steps": train_steps if kind == "mlp"
                      else 0, "denoiser": kind}


def _max_energy(pot, xs, sigmas, n_paths, seed, k_steps):
    from latentgeo.molecules.tps import annealed_langevin

    gen = torch.Generator().manual_seed(seed + 1)
    out = annealed_langevin(pot, xs, sigmas, n_paths, k_steps=k_steps, step=4e-4, kT=1.0, generator=gen,
                            track_max=True, scheme="em", return_max_states=True)
    strict = np.asarray(out[1], dtype=np.float64)
    return strict


def _tps_geodesics(pot, D, steps_list, n_paths, seed, quick, compile_, start, end):
    sigma_end = math.exp(-2.0)  # log-SNR 4
    a = torch.tensor(start, dtype=DT)
    b = torch.tensor(end, dtype=DT)
    N = 64 if quick else 128
    k_steps = 32 if quick else 64
    out = {}
    for steps in steps_list:
        res = {}
        strict = {}
        for obj in OBJECTIVES:
            t0 = time.perf_counter()
            g = geodesic(D, (a, sigma_end), (b, sigma_end), n_points=N, n_nodes=10, steps=steps, lr=0.1,
                         n_probes=None, generator=torch.Generator().manual_seed(seed), eval_probes=None,
                         objective=obj, compile=compile_)
            t_geo = time.perf_counter() - t0
            xs = g.xs.detach().to(DT).reshape(N, -1)
            sg = g.sigmas.detach().to(DT).reshape(-1)
            me = _max_energy(pot, xs, sg, n_paths, seed, k_steps)
            strict[obj] = me
            res[obj] = {"max_energy_mean": float(me.mean()), "max_energy_std": float(me.std()),
                        "max_energy_se": float(me.std() / math.sqrt(len(me))),
                        **_objective_values(D, xs, sg), "sigma_max": float(sg.max()),
                        "geodesic_seconds": t_geo, "seconds_per_step": g.seconds_per_step,
                        "compiled": bool(g.compile_seconds > 0)}
        diff = strict["relu"] - strict["abs"]  # same Langevin noise for both curves: paired
        res["paired_difference_relu_minus_abs"] = {"mean": float(diff.mean()),
                                                   "se": float(diff.std() / math.sqrt(len(diff)))}
        out[f"geo_steps_{steps}"] = res
        print(json.dumps({"seed": seed, "geo_steps": steps, **{o: {k: res[o][k] for k in (
            "max_energy_mean", "max_energy_se", "energy", "objective_abs", "objective_relu", "negative_components")}
            for o in OBJECTIVES}, "paired": res["paired_difference_relu_minus_abs"]}), flush=True)
    return out


def run_tps(kind, seeds, steps_list, n_paths, quick, compile_):
    from latentgeo.molecules.potentials import ALANINE_END, ALANINE_START

    per_seed = {}
    for seed in seeds:
        pot, den, info = _tps_data_and_denoiser(kind, seed, quick)
        per_seed[str(seed)] = {"setup": info, **_tps_geodesics(pot, den, steps_list, n_paths, seed, quick, compile_,
                                                                  ALANINE_START, ALANINE_END)}
    return {"settings": {"system": "alanine (table, kT = 1)", "denoiser": kind, "log_snr_endpoints": 4.0,
                         "n_points": 64 if quick else 128, "n_nodes": 10, "lr": 0.1, "divergence": "exact",
                         "langevin": {"k_steps": 32 if quick else 64, "step": 4e-4, "kT": 1.0, "scheme": "em"},
                         "n_paths": n_paths, "max_energy": "strict (every Langevin state), TABLE scoring",
                         "pairing": "same denoiser and Langevin noise (seed + 1) for both objectives"},
            "seeds": per_seed, "summary": _summary(per_seed, steps_list)}


def _summary(per_seed, steps_list):
    out = {}
    for steps in steps_list:
        k = f"geo_steps_{steps}"
        rows = [v[k] for v in per_seed.values() if k in v]
        if not rows:
            continue
        out[k] = {o: {"max_energy_mean_over_seeds": float(np.mean([r[o]["max_energy_mean"] for r in rows])),
                      "energy_mean_over_seeds": float(np.mean([r[o]["energy"] for r in rows])),
                      "negative_components_mean": float(np.mean([r[o]["negative_components"] for r in rows]))}
                  for o in OBJECTIVES}
        out[k]["paired_difference_relu_minus_abs_per_seed"] = [r["paired_difference_relu_minus_abs"] for r in rows]
    return out


# -------------------------------------------------------------------------------------------------- authors' model

def authors_denoiser(repo: str):
    """The authors' trained alanine checkpoint as a latentgeo denoiser ``D(x_VE, sigma_VE)`` (their VP net through
    :class:`geodesic_cost.VPtoVE`; their class is imported from the checkout named by ``--authors-repo``)."""
    from geodesic_cost import VPtoVE, authors_net  # noqa: E402 (the sibling benchmark: one loader, one adapter)

    return VPtoVE(authors_net(repo).eval())


def run_authors(repo, steps_list, n_paths, quick):
    from latentgeo.molecules.potentials import ALANINE_END, ALANINE_START, AlanineTable

    den = authors_denoiser(repo)
    return {"checkpoint": "molecular_experiments/diffusion_model.pt of the authors' repository (their MLP: hidden 128, "
                          "3 residual GELU blocks, sinusoidal embeddings)",
            **_tps_geodesics(AlanineTable(), den, steps_list, n_paths, 0, quick, False, ALANINE_START, ALANINE_END)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", nargs="+", default=["exact", "tps", "kde"],
                    choices=["exact", "tps", "kde", "authors"])
    ap.add_argument("--paths", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--geo-steps", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--exact-steps", type=int, default=600)
    ap.add_argument("--authors-repo", default=None, help="checkout of rafalkarczewski/spacetime-geometry")
    ap.add_argument("--no-compile", action="store_true", help="eager geodesic steps in the TPS sections")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "geodesic_objective.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res.update({"benchmark": "geodesic_objective", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()},
                "objectives": {"abs": "(N-1)/2 sum_n |d_n|, d_n = sum_k c_nk (latentgeo)",
                               "relu": "(N-1)/2 sum_n sum_k max(c_nk, 0) (the authors' form)",
                               "c_nk": "(eta_{n+1} - eta_n)_k (mu_{n+1} - mu_n)_k, k over (x0 coordinates, |x0|^2)"}})
    steps_list = [100] if args.quick else args.geo_steps
    seeds = args.seeds[:1] if args.quick else args.seeds
    paths = min(args.paths, 50) if args.quick else args.paths
    if "authors" in args.sections and not args.authors_repo:
        ap.error("--sections authors needs --authors-repo DIR")

    def stamp(section):  # each section records when and under what load it ran (sections are merged across runs)
        return {**section, "run": {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "loadavg_end": os.getloadavg(), "argv": sys.argv[1:]}}

    if "exact" in args.sections:
        res["exact"] = stamp(run_exact(100 if args.quick else args.exact_steps, 32 if args.quick else 64, args.quick))
    if "tps" in args.sections:
        res["tps_mlp"] = stamp(run_tps("mlp", seeds, steps_list, paths, args.quick, not args.no_compile))
    if "kde" in args.sections:
        res["tps_kde_exact_model"] = stamp(run_tps("kde", seeds, steps_list, paths, args.quick, False))
    if "authors" in args.sections:
        res["tps_authors_checkpoint"] = stamp(run_authors(args.authors_repo, steps_list, paths, args.quick))
    res["machine"]["loadavg_end"] = os.getloadavg()
    if not args.quick:
        atomic_write_json(out, res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("exact",)}, indent=1, default=str)[:4000])


if __name__ == "__main__":
    main()
