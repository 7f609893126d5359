"""Cost of the Diffusion Edit Distance: seconds per pair vs data dimension, curve points and pair batch, the warm-start
speed-up, and a 100-image digits matrix (measured within a time budget, then extrapolated).

Models (speed does not depend on training, so nets have random weights):
- ``gmm``: exact denoiser of a 10-component full-covariance Gaussian mixture (``ExactMixtureDenoiser`` of
  ``benchmarks/diffed_semantics.py``), n = 16, 64, 256, 784.
- ``mlp``: the EDM MLP the demo trains on digits (hidden 256, depth 3), n = 64 (8x8) and 784 (28x28).
- ``unet``: latentgeo's EDM U-Net (default base 32, mults (1, 2), ~0.64M parameters), 8x8 and 28x28 images.
Per (model, shape, N = 16 and 64 curve points, P = 1 and 32 pairs per batch; U-Nets P = 1 and 8, 28x28 P = 1):
wall and CPU seconds per Adam step (``Geodesic.seconds_per_step``)
and of the final length evaluation (16 Rademacher probes), float32, one probe per step; each the minimum over 3
repeats (median also stored). From these, seconds per pair
for two schedules: ``cli`` (the CLI default: 16 points x 150 steps, then 64 points x 50 steps, 8 knots) and
``warm30`` (16 points x 30 warm-started steps, 6 knots: ``edit_distance_matrix(..., warm_start="auto")``).

Warm start: on 16 pairs of PF-ODE-encoded digits under the exact class mixture, the length after S steps from the
straight line (cold) and from the learnt log-SNR profile (warm) relative to a 300-step cold optimisation.

Matrix: ``edit_distance_matrix`` of 100 test digits (4,950 pairs) with the warm30 schedule, pair_batch 128, for at most
``--matrix-budget`` seconds (the progress callback stops it; the cache under ``--cache`` makes a rerun continue), then
the time of the whole matrix extrapolated from the pairs done. Rerunning with ``--skip scaling warm`` resumes both
matrices from their caches (recorded as ``matrix_resumed``: pairs taken from the cache, pairs computed, seconds).

    OMP_NUM_THREADS=1 python benchmarks/diffed_cost.py --threads 1 [--quick] [--matrix-budget 240]

Writes ``benchmarks/results/diffed_cost.json``. The machine is shared: every entry records the load average, and CPU
time (``process_time``) is given beside wall time since it is less sensitive to other processes. The stored results
use ONE torch thread: with other processes running, two threads on this 2-core machine stall at OpenMP barriers
(per-step times of 0.5 s appeared at random; cf. ``benchmarks/results/load_threads.json``); on a quiet machine two
threads are at most ~1.2-1.9x faster for these batch sizes. (Timings use 6 knots for both schedules; the CLI's 8
change little.)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from diffed_semantics import ExactMixtureDenoiser, class_mixture  # noqa: E402

from latentgeo.checkpoint import atomic_write_json  # noqa: E402
from latentgeo.fisher.exact import GaussianMixture  # noqa: E402
from latentgeo.spacetime.diffed import edit_distance_matrix, edit_distance_pairs, encode_to_sigma  # noqa: E402
from latentgeo.spacetime.family import segment_terms  # noqa: E402
from latentgeo.spacetime.geodesic import geodesic  # noqa: E402

SIGMA = 0.1


def random_gmm(n: int, K: int = 10, seed: int = 0) -> ExactMixtureDenoiser:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, n, 8, generator=g, dtype=torch.float64) * 0.3
    covs = A @ A.transpose(-1, -2) + 0.01 * torch.eye(n, dtype=torch.float64)
    gm = GaussianMixture(torch.ones(K, dtype=torch.float64), torch.randn(K, n, generator=g, dtype=torch.float64) * 0.5,
                         covs)
    return ExactMixtureDenoiser(gm)


def net_denoiser(net: str, shape, seed: int = 0):
    from latentgeo.diffusion import build_denoiser

    torch.manual_seed(seed)
    x0 = torch.rand(64, *shape) * 2 - 1
    kw = {"hidden": 256, "depth": 3} if net == "mlp" else {}
    den = build_denoiser(x0, net, kw).eval()
    for p in den.parameters():
        p.requires_grad_(False)
    return den


def time_steps(den, shape, N: int, P: int, steps: int, n_nodes: int = 6, seed: int = 0, reps: int = 3) -> dict:
    """Seconds per Adam step and for the 16-probe final evaluation: the MINIMUM over ``reps`` repeats (the machine is
    shared; the minimum is the least disturbed estimate), with the median beside it."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(P, *shape, generator=g) * 2 - 1
    b = torch.rand(P, *shape, generator=g) * 2 - 1
    s = torch.full((P,), SIGMA)
    geodesic(den, (a, s), (b, s), n_points=N, n_nodes=n_nodes, steps=1, n_probes=1, eval_probes=1, batched=True)
    st, stc, ev, evc = [], [], [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        geo = geodesic(den, (a, s), (b, s), n_points=N, n_nodes=n_nodes, steps=steps, n_probes=1, eval_probes=1,
                       batched=True, generator=g)
        w1, c1 = time.perf_counter(), time.process_time()
        segment_terms(den, geo.xs, geo.sigmas, n_probes=16, generator=g)
        w2, c2 = time.perf_counter(), time.process_time()
        st.append(geo.seconds_per_step)
        stc.append((c1 - c0) / max(w1 - w0, 1e-9) * geo.seconds_per_step)  # CPU share of the step time
        ev.append(w2 - w1)
        evc.append(c2 - c1)
    return {"N": N, "P": P, "steps_timed": steps, "reps": reps, "sec_per_step": min(st),
            "sec_per_step_median": float(np.median(st)), "cpu_sec_per_step": min(stc),
            "sec_per_pair_step": min(st) / P, "eval16_sec": min(ev), "eval16_cpu_sec": min(evc),
            "load_avg": os.getloadavg()[0]}


def per_pair(rows: dict) -> dict:
    """Seconds per pair for the two schedules, from per-step times at N = 16 and 64 (same P)."""
    out = {}
    r16, r64 = rows.get(16), rows.get(64)
    if r16 is not None:
        out["warm30"] = (30 * r16["sec_per_step"] + r16["eval16_sec"]) / r16["P"]
    if r16 is not None and r64 is not None:
        out["cli"] = (150 * r16["sec_per_step"] + 50 * r64["sec_per_step"] + r64["eval16_sec"]) / r16["P"]
    return out


def warm_vs_cold(n_pairs: int, steps_list, ref_steps: int, seed: int = 0) -> dict:
    from scipy.stats import spearmanr

    from latentgeo.data.images import digits
    from latentgeo.spacetime.diffed import _warm_scale

    xtr, ytr = digits(split="train", return_labels=True)
    xte, _ = digits(split="test", return_labels=True)
    den = ExactMixtureDenoiser(class_mixture(xtr.reshape(len(xtr), -1), ytr))
    E = encode_to_sigma(den, xte[: 4 * n_pairs].reshape(4 * n_pairs, -1), SIGMA)
    A1, B1, A, B = E[:n_pairs], E[n_pairs:2 * n_pairs], E[2 * n_pairs:3 * n_pairs], E[3 * n_pairs:]
    kw = dict(sigma_min=SIGMA, n_points=16, n_nodes=6, n_probes=1, eval_probes=16)
    # the profile, learnt as edit_distance_matrix(warm_start="auto") does (on other pairs)
    _, g1 = edit_distance_pairs(den, A1[:8], B1[:8], steps=100, return_geodesic=True,
                                generator=torch.Generator().manual_seed(seed), **kw)
    u1 = _warm_scale(A1[:8], B1[:8], SIGMA)
    lam = g1.nodes[:, :, 0].double()
    prof = (lam * u1[:, None]).sum(0) / (u1 * u1).sum()
    ref = edit_distance_pairs(den, A, B, steps=ref_steps, generator=torch.Generator().manual_seed(seed + 1), **kw)
    u = _warm_scale(A, B, SIGMA).float()
    init = torch.zeros(n_pairs, 6, 1 + A.shape[1])
    init[:, :, 0] = u[:, None] * prof.float()[None]
    res = {"pairs": n_pairs, "reference_steps": ref_steps, "profile": prof.tolist(), "rows": []}
    for S in steps_list:
        for mode in ("cold", "warm"):
            L = edit_distance_pairs(den, A, B, steps=S, init_nodes=init if mode == "warm" else None,
                                    generator=torch.Generator().manual_seed(seed + 2), **kw)
            r = (L / ref).double()
            res["rows"].append({"steps": S, "init": mode, "length_over_reference_mean": float(r.mean()),
                                "max": float(r.max()), "spearman_with_reference":
                                    float(spearmanr(L.numpy(), ref.numpy()).statistic)})
            print(f"  warm-vs-cold S={S} {mode}: L/ref {float(r.mean()):.3f}", flush=True)
    return res


def matrix_run(name: str, den, X: torch.Tensor, budget: float, cache: Path, pair_batch: int = 128) -> dict:
    t0 = time.perf_counter()
    c0 = time.process_time()
    state = {}

    def stop(done, total):
        state.update(done=done, total=total, t=time.perf_counter() - t0)
        if time.perf_counter() - t0 > budget:
            raise TimeoutError

    path = cache / f"{name}.npz"
    from latentgeo.spacetime.diffed import read_matrix_cache

    pre = int(np.triu(read_matrix_cache(path)[1], 1).sum()) if path.exists() else 0
    finished = True
    try:
        _, info = edit_distance_matrix(den, X, sigma_min=SIGMA, encode=True, n_points=16, n_nodes=6, steps=30,
                                       n_probes=1, eval_probes=16, pair_batch=pair_batch, warm_start="auto",
                                       pilot_pairs=8, pilot_steps=100, seed=0, out=path, progress=stop,
                                       return_info=True)
    except TimeoutError:
        finished = False
    D, done, meta = read_matrix_cache(path)
    n_done = int(np.triu(done, 1).sum())
    total = X.shape[0] * (X.shape[0] - 1) // 2
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"images": X.shape[0], "pairs": total, "pairs_done": n_done, "finished": finished, "wall_sec": wall,
           "cpu_sec": cpu, "load_avg": list(os.getloadavg()), "pair_batch": pair_batch,
           "pairs_from_cache": pre, "pairs_this_run": n_done - pre}
    per = wall / max(out["pairs_this_run"], 1)
    out["sec_per_pair_incl_pilot_and_encode"] = per
    out["extrapolated_full_matrix_sec"] = wall if (finished and pre == 0) else per * total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--matrix-budget", type=float, default=240.0)
    ap.add_argument("--skip", nargs="*", default=[], help="any of: scaling warm matrix")
    ap.add_argument("--cache", default="/tmp/latentgeo_diffed_cost")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/diffed_cost.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cache = Path(a.cache)
    res = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": a.threads,
                       "torch": torch.__version__, "load_avg_start": list(os.getloadavg())},
           "settings": {"sigma_min": SIGMA, "dtype": "float32", "n_probes": 1, "eval_probes": 16}}
    if Path(a.out).exists():  # keep the sections not rerun (e.g. --skip scaling warm to resume the matrices)
        import json

        try:
            old = json.loads(Path(a.out).read_text())
            for k in ("scaling", "warm_start", "matrix"):
                if k in old:
                    res[k] = old[k]
        except (OSError, ValueError):
            pass
    mkey = "matrix_resumed" if "matrix" in res and "matrix" not in a.skip else "matrix"
    t_all = time.perf_counter()
    steps = 3 if a.quick else 4
    if "scaling" not in a.skip:
        cases = [("gmm", (16,)), ("gmm", (64,)), ("gmm", (256,)), ("gmm", (784,)), ("mlp", (64,)), ("mlp", (784,)),
                 ("unet", (1, 8, 8)), ("unet", (1, 28, 28))]
        if a.quick:
            cases = [("gmm", (64,)), ("mlp", (64,)), ("unet", (1, 8, 8))]
        res["scaling"] = []
        for model, shape in cases:
            den = random_gmm(shape[0]) if model == "gmm" else net_denoiser(model, shape)
            unet = model == "unet"
            big = unet and shape[-1] == 28
            for P in ((1,) if big else (1, 8) if unet else (1, 32)):
                rows = {}
                for N in (16, 64):
                    if unet and P > 1 and N == 64:
                        continue
                    rows[N] = time_steps(den, shape, N, P, 2 if big else 3 if unet else steps)
                entry = {"model": model, "shape": list(shape), "dim": int(np.prod(shape)), "P": P,
                         "by_points": list(rows.values()), "sec_per_pair": per_pair(rows)}
                res["scaling"].append(entry)
                atomic_write_json(a.out, res)
                print(f"{model} {shape} P={P}: " + ", ".join(f"N={r['N']} {r['sec_per_step']:.3f} s/step"
                                                          for r in rows.values())
                      + f" | per pair {entry['sec_per_pair']}", flush=True)
    if "warm" not in a.skip:
        res["warm_start"] = warm_vs_cold(8 if a.quick else 16, [10, 20, 40] if not a.quick else [10],
                                         60 if a.quick else 300)
        atomic_write_json(a.out, res)
    if "matrix" not in a.skip:
        from latentgeo.data.images import digits

        xtr, ytr = digits(split="train", return_labels=True)
        xte, _ = digits(split="test", return_labels=True)
        n = 20 if a.quick else 100
        res[mkey] = {}
        gm_den = ExactMixtureDenoiser(class_mixture(xtr.reshape(len(xtr), -1), ytr))
        res[mkey]["digits_exact_mixture"] = matrix_run("gmm", gm_den, xte[:n].reshape(n, -1), a.matrix_budget,
                                                           cache)
        atomic_write_json(a.out, res)
        print("matrix gmm", res[mkey]["digits_exact_mixture"], flush=True)
        res[mkey]["digits_mlp"] = matrix_run("mlp", net_denoiser("mlp", (1, 8, 8)), xte[:n], a.matrix_budget,
                                                 cache)
        print("matrix mlp", res[mkey]["digits_mlp"], flush=True)
    res["seconds_total"] = time.perf_counter() - t_all
    res["machine"]["load_avg_end"] = list(os.getloadavg())
    atomic_write_json(a.out, res)
    print(f"wrote {a.out} ({res['seconds_total']:.0f} s)")


if __name__ == "__main__":
    main()
