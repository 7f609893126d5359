"""Does the Diffusion Edit Distance (DiffED) know about classes? Perfect models vs trained models of rising quality.

Perfect models: a Gaussian mixture with one component per class (full covariance, Ledoit-Wolf shrinkage, fitted on
the train split) has an exact denoiser, so it is a perfect diffusion model of a class-structured data set:
- ``digits``: scikit-learn 8x8 digits in [-1, 1], 64-D pixels, held-out test digits.
- ``samples``: the digits mixture on points drawn from itself (the exact denoiser is then the true posterior mean
  of the held-out points' distribution: the cleanest test of DiffED).
- ``fashion``: Fashion-MNIST 28x28 in [-1, 1], PCA-reduced to ``--pca`` dims (default 32; basis fitted on the first
  ``--fashion-train`` train images). DiffED and Euclid are computed in PCA coordinates (Euclid there equals the
  pixel distance between the PCA reconstructions, the projection being orthonormal); SSIM is computed on the 28x28
  reconstructions ``mean + V z`` (so all three see the same information), and, as an extra row, on the original
  images.
Trained models: the EDM MLP denoiser the demo trains on digits (``hidden 256, depth 3``, batch 256) at several
training lengths (``--train-steps``, default 200 1000 3000); optionally the U-Net (``--unet-steps``).
Quality yardstick for every model: held-out denoising MSE per pixel at sigma = 0.1, 0.3, 1.

On ``--per-class`` held-out test images per class (default 4, i.e. 40 images, 780 pairs) it computes three N x N
distance matrices -- DiffED (PF-ODE-encoded to sigma_min = 0.1, warm-started batched geodesics, see
``latentgeo.spacetime.edit_distance_matrix``), Euclidean, 1 - SSIM -- and for each: leave-one-out 1-NN and 3-NN class
accuracy, the between/within-class mean-distance ratio, the within-vs-between AUC (probability that a random
same-class pair is closer than a random different-class pair; rank-based, so fair to measures of different shape),
and the Spearman correlations between the measures (upper-triangle pairs). 95% CIs: percentile bootstrap over
images (``--boot`` resamples; resampled duplicates of one image are never paired with each other), plus paired
bootstrap CIs of DiffED - Euclid.

Geodesic settings (all models): 16 curve points, 6 knots, 30 warm-started Adam steps (lr 0.1; an 8-pair pilot of
100 cold steps learns the warm-start profile), 1 Rademacher probe per step, 16 for the final lengths, float32.
The exact mixture denoiser is evaluated by an equivalent, ~5x faster formulation (``ExactMixtureDenoiser``, checked
against ``GaussianMixture.denoiser`` to 1e-10 at start). Matrices are cached (resumable) under ``--cache``.

    OMP_NUM_THREADS=1 python benchmarks/diffed_semantics.py --threads 1 [--quick] [--per-class 4] [--skip fashion]

Writes ``benchmarks/results/diffed_semantics.json`` (merged: a rerun with ``--skip`` updates only the models it runs;
finished trained-model matrices are re-evaluated from the cache unless ``--retrain``). Sizes: 40 images (780 pairs)
per model, 6 models; about 5 minutes of geodesics plus ~1 minute of training on a quiet machine with one thread, but
33 minutes in the recorded run, during which other jobs kept the load average at 4-7 (each model's seconds are
stored). Use one thread on a shared machine (two stall at OpenMP barriers under load).
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

from latentgeo.checkpoint import atomic_write_json  # noqa: E402
from latentgeo.fisher.exact import GaussianMixture  # noqa: E402
from latentgeo.spacetime.compare import semantic_statistics as evaluate  # noqa: E402,F401 (k-NN / AUC / ratio + CIs)
from latentgeo.spacetime.compare import ssim  # noqa: E402
from latentgeo.spacetime.diffed import edit_distance_matrix  # noqa: E402

SIGMA_MIN = 0.1
MSE_SIGMAS = (0.1, 0.3, 1.0)


class ExactMixtureDenoiser:
    """``E[x0 | x]`` of a Gaussian mixture (same maths as ``GaussianMixture.denoiser``, one GEMM per call).

    With ``C_k = U_k diag(l_k) U_k^T`` and ``y_k = U_k^T (x - m_k)``: responsibilities from ``N(y_k; 0, l_k + s^2)``,
    ``D = sum_k r_k (m_k + U_k (l_k / (l_k + s^2)) y_k)``. ``x`` is [B, ...] with prod(...) = n.
    """

    def __init__(self, gm: GaussianMixture, dtype=torch.float32):
        lam, U = gm._evals, gm._evecs  # noqa: SLF001 (read-only use of the fitted eigendecomposition)
        self.K, self.n = gm.K, gm.n
        self.Ucat = U.permute(1, 0, 2).reshape(self.n, -1).to(dtype)
        self.mU = torch.einsum("kj,kji->ki", gm.means, U).to(dtype)
        self.lam = lam.to(dtype)
        self.logw = torch.log(gm.weights).to(dtype)
        self.m = gm.means.to(dtype)
        self.mixture = gm  # lets edit_distance_matrix fingerprint the model

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sh = x.shape
        x = x.reshape(sh[0], -1)
        tau = (torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(sh[0]) ** 2)
        y = (x @ self.Ucat).reshape(-1, self.K, self.n) - self.mU
        var = self.lam + tau[:, None, None]
        logn = -0.5 * ((y * y / var).sum(-1) + torch.log(var).sum(-1))
        r = torch.softmax(self.logw + logn, 1)
        z = r[:, :, None] * (self.lam / var) * y
        return (r @ self.m + z.reshape(sh[0], -1) @ self.Ucat.T).reshape(sh)


def class_mixture(X: torch.Tensor, y: torch.Tensor) -> GaussianMixture:
    """One Ledoit-Wolf-shrunk full-covariance Gaussian per class (weights = class frequencies), float64."""
    from sklearn.covariance import LedoitWolf

    means, covs, w, shrink = [], [], [], []
    for k in range(int(y.max()) + 1):
        xk = X[y == k].double().numpy()
        lw = LedoitWolf().fit(xk)
        means.append(torch.tensor(lw.location_))
        covs.append(torch.tensor(lw.covariance_))
        w.append(float(len(xk)))
        shrink.append(float(lw.shrinkage_))
    gm = GaussianMixture(torch.tensor(w, dtype=torch.float64), torch.stack(means), torch.stack(covs))
    gm.shrinkage = shrink
    return gm


def stratified(y: torch.Tensor, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(y.numpy() == k), per_class, replace=False) for k in range(int(y.max()) + 1)]
    return np.sort(np.concatenate(idx))


def denoise_mse(den, x: torch.Tensor, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for s in MSE_SIGMAS:
            n = torch.randn(x.shape, generator=g, dtype=x.dtype)
            d = den(x + s * n, torch.full((x.shape[0],), s, dtype=x.dtype))
            out[f"sigma={s:g}"] = float(((d - x) ** 2).mean())
    return out


# ---------------------------------------------------------------------------------------------------- DiffED
def diffed(den, X: torch.Tensor, cache: Path, name: str, geo: dict, progress: bool) -> tuple:
    t0 = time.perf_counter()
    def report(done, total):
        print(f"  {name}: {done}/{total} pairs, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    M, info = edit_distance_matrix(den, X, out=cache / f"{name}.npz", progress=report if progress else None,
                                   return_info=True, **geo)
    neg = info["negative_fraction"].numpy()
    iu = np.triu_indices(X.shape[0], 1)
    return M.double().numpy(), {"seconds": time.perf_counter() - t0, "pairs": info["total"],
                                "computed_now": info["computed"], "resumed": info["resumed"],
                                "negative_fraction_mean": float(neg[iu].mean()),
                                "warm_profile": [float(v) for v in info["warm_profile"]]
                                if info["warm_profile"] is not None else None}


def pairwise_euclid(X: torch.Tensor) -> np.ndarray:
    F = X.reshape(X.shape[0], -1).double()
    return torch.cdist(F, F).numpy()


def pairwise_dssim(img: torch.Tensor) -> np.ndarray:
    N = img.shape[0]
    i, j = np.triu_indices(N, 1)
    s = ssim(img[i].double(), img[j].double()).numpy()
    M = np.zeros((N, N))
    M[i, j] = M[j, i] = 1.0 - s
    return M


def convergence_check(den, X: torch.Tensor, M: np.ndarray, geo: dict, n_pairs: int, steps: int, seed: int) -> dict:
    """The matrix's warm-started lengths vs a long cold optimisation of the same pairs (how well the short warm runs
    converge; a cold run of ``steps`` steps from the straight line is the reference)."""
    from scipy.stats import spearmanr

    from latentgeo.spacetime.diffed import edit_distance_pairs, encode_to_sigma

    rng = np.random.default_rng(seed)
    N = X.shape[0]
    i = rng.integers(0, N, n_pairs)
    j = (i + rng.integers(1, N, n_pairs)) % N
    E = encode_to_sigma(den, X, SIGMA_MIN, steps=geo["encode_steps"])
    cold = edit_distance_pairs(den, E[i], E[j], sigma_min=SIGMA_MIN, n_points=geo["n_points"],
                               n_nodes=geo["n_nodes"], steps=steps, n_probes=1, eval_probes=geo["eval_probes"],
                               generator=torch.Generator().manual_seed(seed)).double().numpy()
    warm = M[i, j]
    r = warm / cold
    return {"pairs": n_pairs, "cold_steps": steps, "warm_over_cold_mean": float(r.mean()),
            "warm_over_cold_range": [float(r.min()), float(r.max())],
            "spearman_warm_cold": float(spearmanr(warm, cold).statistic)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--train-steps", type=int, nargs="*", default=[200, 1000, 3000])
    ap.add_argument("--unet-steps", type=int, nargs="*", default=[])
    ap.add_argument("--pca", type=int, default=32)
    ap.add_argument("--fashion-train", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=30, help="warm-started Adam steps per geodesic")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--skip", nargs="*", default=[], help="any of: digits samples fashion trained")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images per class, 10 steps, 100 resamples")
    ap.add_argument("--cache", default="/tmp/latentgeo_diffed_semantics", help="resumable matrix caches")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/diffed_semantics.json"))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="drop the results of models not rerun")
    ap.add_argument("--retrain", action="store_true", help="retrain models whose finished matrix is cached (else "
                    "their cached matrix is re-evaluated with the stored training info)")
    a = ap.parse_args()
    if a.quick:
        a.per_class, a.steps, a.boot, a.train_steps = 2, 10, 100, [50, 200]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cache = Path(a.cache) / ("quick" if a.quick else "full")
    geo = dict(sigma_min=SIGMA_MIN, encode=True, encode_steps=32, n_points=16, n_nodes=6, steps=a.steps, lr=0.1,
               n_probes=1, eval_probes=16, pair_batch=128, warm_start="auto", pilot_pairs=8, pilot_steps=100,
               seed=a.seed)
    t_all = time.perf_counter()
    from latentgeo.data.images import digits, fashion_mnist

    res = {"settings": {**{k: v for k, v in geo.items()}, "per_class": a.per_class, "boot": a.boot,
                        "dtype": "float32", "threads": a.threads, "pca": a.pca, "fashion_train": a.fashion_train,
                        "mse_sigmas": list(MSE_SIGMAS)},
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "load_avg_start": list(os.getloadavg())},
           "models": {}}
    if Path(a.out).exists() and not a.fresh:  # keep other models' results (a rerun with --skip updates some)
        import json

        try:
            res["models"] = json.loads(Path(a.out).read_text()).get("models", {})
        except (OSError, ValueError):
            pass

    def record(key, mats, y, extra):
        ev = evaluate(mats, y, a.boot, a.seed)
        res["models"][key] = {**extra, "metrics": ev}
        atomic_write_json(a.out, res)
        d, e = ev["diffed"], ev["euclid"]
        print(f"{key}: 1-NN DiffED {d['knn1']['value']:.3f} Euclid {e['knn1']['value']:.3f} | AUC DiffED "
              f"{d['auc']['value']:.3f} Euclid {e['auc']['value']:.3f} | Spearman DiffED~Euclid "
              f"{ev['spearman']['diffed~euclid']['value']:+.3f} | {extra['diffed']['seconds']:.0f} s", flush=True)

    xtr, ytr = digits(split="train", return_labels=True)
    xte, yte = digits(split="test", return_labels=True)
    sel = stratified(yte, a.per_class, a.seed)
    Xd, yd = xte[sel], yte[sel].numpy()
    eu_d, ss_d = pairwise_euclid(Xd), pairwise_dssim(Xd)

    if "digits" not in a.skip:
        gm = class_mixture(xtr.reshape(len(xtr), -1), ytr)
        den = ExactMixtureDenoiser(gm)
        xc = xte[:64].reshape(64, -1).double()
        sc = torch.full((64,), 0.3, dtype=torch.float64)
        err = float((ExactMixtureDenoiser(gm, torch.float64)(xc, sc) - gm.denoiser(xc, sc)).abs().max())
        M, info = diffed(den, Xd.reshape(len(Xd), -1), cache, "digits_gmm", geo, a.progress)
        conv = convergence_check(den, Xd.reshape(len(Xd), -1), M, geo, 24 if not a.quick else 4, 300, a.seed)
        record("digits / exact class mixture (64-D)", {"diffed": M, "euclid": eu_d, "ssim": ss_d}, yd,
               {"diffed": info, "denoise_mse": denoise_mse(den, xte.reshape(len(xte), -1)),
                "ledoit_wolf_shrinkage": gm.shrinkage, "exact_denoiser_check_maxabs": err, "convergence": conv})

    if "samples" not in a.skip:
        # the cleanest case: the exact model on data drawn from that very model (4 samples per component)
        gm = class_mixture(xtr.reshape(len(xtr), -1), ytr)
        den = ExactMixtureDenoiser(gm)
        g = torch.Generator().manual_seed(a.seed)
        K = gm.K
        Xs = torch.cat([gm.means[k][:, None] + (gm._evecs[k] * gm._evals[k].sqrt()) @ torch.randn(
            gm.n, a.per_class, generator=g, dtype=torch.float64) for k in range(K)], 1).T.float()  # noqa: SLF001
        ys = np.repeat(np.arange(K), a.per_class)
        M, info = diffed(den, Xs, cache, "digits_gmm_samples", geo, a.progress)
        record("digits class mixture / its own samples (64-D)",
               {"diffed": M, "euclid": pairwise_euclid(Xs), "ssim": pairwise_dssim(Xs.reshape(-1, 1, 8, 8))}, ys,
               {"diffed": info, "note": "held-out points drawn from the mixture itself, so the exact denoiser is the "
                                        "true posterior mean of their distribution; ssim on the samples as 8x8 "
                                        "images (not clipped to [-1, 1])"})

    if "fashion" not in a.skip:
        ftr, fytr = fashion_mnist(split="train", n=a.fashion_train, return_labels=True)
        fte, fyte = fashion_mnist(split="test", return_labels=True)
        F = ftr.reshape(len(ftr), -1).double()
        mean = F.mean(0)
        _, S, V = torch.linalg.svd(F - mean, full_matrices=False)
        V = V[: a.pca]  # [d, 784]
        expl = float((S[: a.pca] ** 2).sum() / (S ** 2).sum())
        Z = (F - mean) @ V.T
        gmf = class_mixture(Z, fytr)
        denf = ExactMixtureDenoiser(gmf)
        fsel = stratified(fyte, a.per_class, a.seed)
        Ft = fte[fsel].reshape(len(fsel), -1).double()
        Zt = ((Ft - mean) @ V.T).float()
        rec = (mean + Zt.double() @ V).reshape(-1, 1, 28, 28)
        M, info = diffed(denf, Zt, cache, f"fashion_pca{a.pca}_gmm", geo, a.progress)
        Zall = ((fte.reshape(len(fte), -1).double()[:2000] - mean) @ V.T).float()
        record(f"fashion-mnist PCA-{a.pca} / exact class mixture",
               {"diffed": M, "euclid": pairwise_euclid(Zt), "ssim": pairwise_dssim(rec),
                "ssim_original": pairwise_dssim(fte[fsel])}, fyte[fsel].numpy(),
               {"diffed": info, "pca_explained_variance": expl, "denoise_mse": denoise_mse(denf, Zall),
                "ledoit_wolf_shrinkage": gmf.shrinkage,
                "note": "euclid in PCA coordinates (= pixel distance of the reconstructions); ssim on the 28x28 "
                        "reconstructions mean + V z; ssim_original on the original test images"})

    if "trained" not in a.skip:
        from latentgeo.diffusion import fit_denoiser

        for net, steps_list in (("mlp", a.train_steps), ("unet", a.unet_steps)):
            for steps in steps_list:
                t0 = time.perf_counter()
                kw = {"hidden": 256, "depth": 3} if net == "mlp" else {"base": 16}
                key = f"digits / trained EDM {net.upper()} {kw} , {steps} steps"
                cfile = cache / f"digits_{net}_{steps}.npz"
                if not a.retrain and key in res["models"] and cfile.exists():
                    from latentgeo.spacetime.diffed import read_matrix_cache

                    Dc, done, _ = read_matrix_cache(cfile)
                    if done[np.triu_indices(len(yd), 1)].all():  # finished earlier: re-evaluate, do not retrain
                        Dc = np.triu(Dc, 1)
                        old = {k: v for k, v in res["models"][key].items() if k != "metrics"}
                        old["reevaluated_from_cache"] = str(cfile)
                        record(key, {"diffed": Dc + Dc.T, "euclid": eu_d, "ssim": ss_d}, yd, old)
                        continue
                den = fit_denoiser(xtr, net=net, steps=steps, batch_size=256, seed=a.seed, net_kwargs=kw).eval()
                for p in den.parameters():
                    p.requires_grad_(False)
                t_train = time.perf_counter() - t0
                M, info = diffed(den, Xd, cache, f"digits_{net}_{steps}", geo, a.progress)
                record(key,
                       {"diffed": M, "euclid": eu_d, "ssim": ss_d}, yd,
                       {"diffed": info, "train_seconds": t_train, "train_steps": steps,
                        "denoise_mse": denoise_mse(den, xte)})
    res["seconds_total"] = time.perf_counter() - t_all
    res["machine"]["load_avg_end"] = list(os.getloadavg())
    atomic_write_json(a.out, res)
    print(f"wrote {a.out} ({res['seconds_total']:.0f} s)")


if __name__ == "__main__":
    main()
