"""Diffusability zoo: does any latentgeo diagnostic predict how well a latent generator does? (issue 14, item 2)

Fashion-MNIST (images in [-1, 1]), a zoo of encoders at comparable size (latent dimension 16 unless stated):

- learned, all through latentgeo's own training functions, on one fixed, equal, seeded budget (``ae_steps``
  optimiser steps of batch 128; GPE: half encoder, half decoder steps): GPE (d = 8, 16, 32), AE, AE+MDS,
  beta-VAE at kl_weight 1e-3 / 1e-2 / 1e-1 (``kl_weight`` multiplies the per-dimension KL, the reconstruction term
  is the per-pixel MSE), all with the MLP architecture (``arch="mlp"``, encoder width 256, decoder width 512:
  the conv encoder costs 40x more per step on one CPU thread, see ``settings.arch_note``); a spatial-latent conv AE
  (``sae``: 32x32 padded images to a ``[1, 4, 4]`` latent, fully convolutional decoder) and the same net with the
  scale-equivariance regulariser of Skorokhodov et al. 2025 (``sae_se``: ``|D(down z) - down x|^2`` added to the
  reconstruction loss, ``down`` = 2x2 average pooling, our own code from the idea), both trained by
  :func:`latentgeo.autoencoders.fit`;
- linear and controlled nonlinear maps of PCA, with exact decoders: PCA (``z = W (x - mu)``, decoder the exact
  pseudo-inverse ``mu + W^T z``), PCA under a random rotation (control), PCA with a smooth high-frequency ripple
  ``z_i = y_i + eps_i sin(omega_i y_i)`` (``y = W (x - mu)``, ``omega_i = 4 pi / std(y_i)``, ``eps_i omega_i = 0.9``
  so the map is strictly monotone per coordinate; decoder: the exact inverse by bisection in float64, 60 halvings
  of the bracket ``[z - eps, z + eps]``), PCA with anisotropic scaling ``z = S y`` (``S`` log-spaced from 30 on the
  leading component to 1 on the last: condition number 30; exact decoder).

Ground truth per encoder (the SAME latent generator everywhere): the latents of the training images normalised
(``zn = c (z - m)``, ``E|zn|^2 = d``), a flow-matching MLP (:func:`latentgeo.flows.fit_flow`, same net, steps,
batch, seed), Heun ODE samples decoded and scored by the classifier Frechet distance
(:func:`latentgeo.metrics.classifier_frechet_distance`) against held-out test images = FD(gen) (mean over two
sampling seeds); FD(recon) = the decoder's reconstructions of OTHER held-out images against the same reference
(reconstructions of the reference images themselves would be paired with it and score unfairly low); the
generation gap = FD(gen) - FD(recon). A second flow seed on PCA measures the training noise of FD(gen).

Diagnostics: :func:`latentgeo.fisher.diagnosis.diagnose` per encoder (Fisher on, one shared pixel denoiser trained
once; and ``fisher=False``, the cheap part), timed in process CPU seconds. Every scalar leaf of an encoder's entry
(dotted names) is a candidate diagnostic. Analysis: Spearman correlation of every diagnostic with FD(gen) and with
the gap, percentile-bootstrap intervals over encoders; a leave-one-out score (top-k signed, rank-standardised
features chosen on n-1 encoders, the left-out one scored); the a-priori ``diffusability_score`` with
``DEFAULT_WEIGHTS``; controls; cost ratios.

Resumable: everything per encoder is cached under ``<cache>/<name>/`` (default ``runs/zoo/``).

    OMP_NUM_THREADS=1 python benchmarks/diffusability_zoo.py                 # full preset (~25 CPU minutes)
    OMP_NUM_THREADS=1 python benchmarks/diffusability_zoo.py --quick         # smoke run (~1-2 min, runs/zoo_quick/)
    OMP_NUM_THREADS=1 python benchmarks/diffusability_zoo.py --stage truth   # encoders + ground truth only

Writes ``benchmarks/results/diffusability_zoo.json`` (+ ``diffusability_zoo.png``).
"""
from __future__ import annotations

import argparse
import inspect
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json  # noqa: E402
from latentgeo.errors import LatentgeoError  # noqa: E402

PRESETS: Dict[str, Dict[str, Any]] = {
    "full": dict(n_train=10000, n_test=2000, latent_dim=16, ae_steps=2000, batch=128, lr=5e-4, enc_width=256,
                 dec_width=512, flow_steps=1500, flow_batch=256, flow_hidden=256, flow_depth=3, n_gen=1000,
                 ode_steps=32, clf_steps=500, n_diag=2000, pixel_steps=1500, latent_steps=1000, n_eval=256,
                 n_probes=4, n_penalty=128, n_geometry=1000, n_equivariance=128, n_boot=2000, sae_channels=1),
    "quick": dict(n_train=1000, n_test=400, latent_dim=16, ae_steps=40, batch=64, lr=1e-3, enc_width=64,
                  dec_width=64, flow_steps=40, flow_batch=128, flow_hidden=64, flow_depth=2, n_gen=200,
                  ode_steps=8, clf_steps=30, n_diag=200, pixel_steps=30, latent_steps=30, n_eval=32,
                  n_probes=1, n_penalty=24, n_geometry=100, n_equivariance=16, n_boot=200, sae_channels=1),
}

#: name -> (kind, options). ``kind``: a latentgeo method, ``sae`` (spatial conv AE) or ``pca`` (linear family).
ZOO: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "gpe8": ("gpe", {"latent_dim": 8}),
    "gpe16": ("gpe", {}),
    "gpe32": ("gpe", {"latent_dim": 32}),
    "ae": ("ae", {}),
    "ae_mds": ("ae-mds", {}),
    "vae_kl1e-3": ("vae", {"kl_weight": 1e-3}),
    "vae_kl1e-2": ("vae", {"kl_weight": 1e-2}),
    "vae_kl1e-1": ("vae", {"kl_weight": 1e-1}),
    "sae": ("sae", {"se_weight": 0.0}),
    "sae_se": ("sae", {"se_weight": 1.0}),
    "pca": ("pca", {"variant": "plain"}),
    "pca_rot": ("pca", {"variant": "rotated"}),
    "pca_ripple": ("pca", {"variant": "ripple"}),
    "pca_aniso": ("pca", {"variant": "aniso"}),
}

# ============================================================================================ statistics (tested)

def rankdata(a: Sequence[float]) -> np.ndarray:
    """Mid-ranks (1-based; ties get the mean of their ranks), as :func:`scipy.stats.rankdata` ``method='average'``."""
    from scipy.stats import rankdata as _rd

    return _rd(np.asarray(a, dtype=float), method="average")


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Spearman rank correlation (Pearson correlation of mid-ranks) over the pairs where both are finite.
    None when fewer than 3 pairs remain or either side is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None
    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else None


def bootstrap_spearman(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Dict[str, Any]:
    """Spearman of ``(a, b)`` with a percentile-bootstrap interval over items (pairs resampled with replacement,
    ``n_boot`` draws from ``numpy.random.default_rng(seed)``). Draws in which either side is constant have no
    correlation and are skipped (``n_used`` counts the others). Returns ``{rho, lo, hi, n, n_used, draws}``
    (``draws``: the bootstrap values, for tests and plots; dropped from the JSON)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    rho = spearman(a, b)
    out: Dict[str, Any] = {"rho": rho, "lo": None, "hi": None, "n": int(a.size), "n_used": 0, "draws": []}
    if rho is None:
        return out
    from scipy.stats import rankdata as _rd

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (int(n_boot), a.size))  # one resample of the items per row
    ra, rb = _rd(a[idx], axis=1), _rd(b[idx], axis=1)  # mid-ranks within each resample
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    ok = den > 1e-12 * a.size ** 3  # constant side: no correlation, skipped
    draws = ((ra * rb).sum(1)[ok] / den[ok]).tolist()
    if draws:
        q = (1 - level) / 2
        out.update(lo=float(np.quantile(draws, q)), hi=float(np.quantile(draws, 1 - q)), n_used=len(draws),
                   draws=draws)
    return out


def rank_position(value: float, reference: Sequence[float]) -> float:
    """Where ``value`` falls among ``reference`` as a mid-rank fraction in [0, 1]:
    ``(#{r < value} + #{r == value} / 2) / len(reference)``; the rank standardisation of the leave-one-out score
    (a value on the scale of the n-1 training encoders, comparable across folds)."""
    r = np.asarray(reference, dtype=float)
    r = r[np.isfinite(r)]
    return float(((r < value).sum() + 0.5 * (r == value).sum()) / r.size)


def leave_one_out(table: Mapping[str, Sequence[float]], target: Sequence[float], k: int = 3,
                  min_items: int = 4) -> Dict[str, Any]:
    """Leave-one-out predictions of ``target`` from the candidate diagnostics in ``table`` (name -> values, one per
    item, NaN where missing).

    Fold ``i``: on the other items, rank the diagnostics by ``|Spearman(diagnostic, target)|`` (diagnostics with
    fewer than ``min_items`` finite values there, or missing for item ``i``, are not eligible; ties broken by name),
    keep the top ``k`` with the signs of their correlations, and predict item ``i`` by
    ``mean_j sign_j * (rank_position(x_ij, training values of j) - 1/2)`` (higher = larger target). Nothing of item
    ``i``'s target is used for its own prediction. Returns ``{predictions, chosen: [[(name, sign)] per fold],
    spearman}``, ``spearman`` of the predictions with the target over the items (None if it is undefined).
    """
    y = np.asarray(target, dtype=float)
    n = y.size
    names = sorted(table)
    cols = {nm: np.asarray(table[nm], dtype=float) for nm in names}
    preds, chosen = [], []
    for i in range(n):
        tr = np.arange(n) != i
        cand = []
        for nm in names:
            x = cols[nm]
            if not np.isfinite(x[i]) or np.isfinite(x[tr]).sum() < min_items:
                continue
            r = spearman(x[tr], y[tr])
            if r is not None:
                cand.append((-abs(r), nm, 1.0 if r >= 0 else -1.0))
        cand.sort()
        top = cand[:k]
        chosen.append([(nm, s) for _, nm, s in top])
        if not top:
            preds.append(float("nan"))
            continue
        preds.append(float(np.mean([s * (rank_position(cols[nm][i], cols[nm][tr]) - 0.5) for _, nm, s in top])))
    return {"predictions": preds, "chosen": chosen, "spearman": spearman(preds, y)}


def flatten_numeric(entry: Any, prefix: str = "") -> Dict[str, float]:
    """Every finite int/float leaf of a nested dict, named by its dotted path (booleans, strings, lists and None are
    not scalar diagnostics and are skipped)."""
    out: Dict[str, float] = {}
    if isinstance(entry, Mapping):
        for k, v in entry.items():
            out.update(flatten_numeric(v, f"{prefix}{k}."))
    elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
        if math.isfinite(float(entry)):
            out[prefix[:-1]] = float(entry)
    return out


def is_diagnostic(name: str) -> bool:
    """False for leaves that are settings, timings or standard errors rather than diagnostics."""
    last = name.rsplit(".", 1)[-1]
    return not (name.startswith("timing_s") or last.endswith("_se") or last in ("se", "n", "step", "n_samples",
                                                                                    "latent_scale"))


# ============================================================================================ encoders

class LinearFamily(nn.Module):
    """PCA family ``x [B, 1, H, W] -> z [B, d]``: ``y = W (x - mu)``, then ``z = y`` (plain / rotated / anisotropic:
    ``W`` already holds the rotation or scaling) or the ripple ``z = y + eps sin(omega y)`` (per coordinate)."""

    def __init__(self, mu: torch.Tensor, W: torch.Tensor, omega: Optional[torch.Tensor] = None,
                 eps: Optional[torch.Tensor] = None):
        super().__init__()
        self.register_buffer("mu", mu.float())
        self.register_buffer("W", W.float())
        self.ripple = omega is not None
        self.register_buffer("omega", (omega if omega is not None else torch.zeros(W.shape[0])).float())
        self.register_buffer("eps", (eps if eps is not None else torch.zeros(W.shape[0])).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x.reshape(x.shape[0], -1).to(self.W.dtype) - self.mu) @ self.W.T
        return y + self.eps * torch.sin(self.omega * y) if self.ripple else y


class LinearFamilyDecoder(nn.Module):
    """Exact decoder of :class:`LinearFamily`: invert the ripple by bisection (float64), then ``x = mu + W^+ y``."""

    def __init__(self, enc: LinearFamily, shape: Sequence[int], iters: int = 60):
        super().__init__()
        self.enc, self.shape, self.iters = enc, list(shape), iters
        self.register_buffer("pinv", torch.linalg.pinv(enc.W.double()).float())

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = self.enc
        if e.ripple:
            zd, om, ep = z.double(), e.omega.double(), e.eps.double()
            # f(y) = y + eps sin(omega y) is increasing (eps * omega < 1) and |f(y) - y| <= eps: the root lies in
            # [z - eps, z + eps]; 60 halvings reach float64 resolution.
            lo, hi = zd - ep, zd + ep
            for _ in range(self.iters):
                mid = 0.5 * (lo + hi)
                big = mid + ep * torch.sin(om * mid) > zd
                hi, lo = torch.where(big, mid, hi), torch.where(big, lo, mid)
            y = (0.5 * (lo + hi)).to(z.dtype)
        else:
            y = z
        x = e.mu + y @ self.pinv.T
        return x.reshape(z.shape[0], *self.shape)


def make_pca_family(xtr: torch.Tensor, d: int, variant: str, seed: int) -> LinearFamily:
    """PCA on the training images (float64 SVD of the centred data), then the variant's map (see module doc)."""
    X = xtr.reshape(xtr.shape[0], -1).double()
    mu = X.mean(0)
    _, s, Vt = torch.linalg.svd(X - mu, full_matrices=False)
    W = Vt[:d]
    g = torch.Generator().manual_seed(seed + 101)
    omega = eps = None
    if variant == "rotated":
        Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        W = (Q * torch.sign(torch.diagonal(R))) @ W  # Haar-distributed rotation
    elif variant == "aniso":
        W = torch.logspace(math.log10(30.0), 0.0, d, dtype=torch.float64)[:, None] * W
    elif variant == "ripple":
        std = s[:d] / math.sqrt(X.shape[0])
        omega = 4 * math.pi / std
        eps = 0.9 / omega
    elif variant != "plain":
        raise LatentgeoError(f"unknown PCA variant '{variant}'; choose plain, rotated, aniso or ripple")
    return LinearFamily(mu, W, omega, eps)


class SpatialEncoder(nn.Module):
    """``x [B, 1, 28, 28] -> z [B, c * 16]``: pad to 32x32 with the background value -1, three k3 s2 convs (SiLU)
    to 4x4, a 1x1 conv to ``c`` channels; the ``[c, 4, 4]`` map is flattened (the zoo's flows and diagnose see a
    vector latent). ``spatial(x32)`` returns the map itself."""

    def __init__(self, c: int = 1, width: int = 16):
        super().__init__()
        self.c = c
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 3, 2, 1),
                                 nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.SiLU(),
                                 nn.Conv2d(2 * width, c, 1))

    def spatial(self, x32: torch.Tensor) -> torch.Tensor:
        return self.net(x32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, 28, 28)
        return self.net(nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)).flatten(1)


class SpatialDecoder(nn.Module):
    """Fully convolutional ``[B, c, h, w] -> [B, 1, 8h, 8w]`` (three nearest x2 upsamplings + 3x3 convs, SiLU), so it
    also decodes a 2x2-pooled latent to a 16x16 image (the scale-equivariance target). ``forward(z [B, c * 16])``
    decodes a flat latent and crops the 32x32 output to 28x28."""

    def __init__(self, c: int = 1, width: int = 16):
        super().__init__()
        self.c = c
        up = lambda i, o: [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(i, o, 3, 1, 1), nn.SiLU()]  # noqa
        self.net = nn.Sequential(nn.Conv2d(c, 2 * width, 3, 1, 1), nn.SiLU(), *up(2 * width, 2 * width),
                                 *up(2 * width, width), *up(width, width), nn.Conv2d(width, 1, 3, 1, 1))

    def spatial(self, zmap: torch.Tensor) -> torch.Tensor:
        return self.net(zmap)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.c, 4, 4))[:, :, 2:30, 2:30]


def _save_state(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save as st_save

    atomic_write_bytes(path, st_save({k: v.contiguous() for k, v in module.state_dict().items()}))


def _load_state(module: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load as st_load

    module.load_state_dict(st_load(path.read_bytes()))
    return module.eval()


def train_sae(xtr: torch.Tensor, cfg: Dict[str, Any], se_weight: float, seed: int, out: Path):
    """The spatial AE through :func:`latentgeo.autoencoders.fit` (same optimiser, steps and batch as the library
    baselines). Loss: ``|D(E x) - x|^2`` + ``se_weight * |D(down E x) - down x|^2`` on 32x32 padded images
    (``down``: 2x2 average pooling; the scale-equivariance idea of Skorokhodov et al. 2025)."""
    from latentgeo.autoencoders import fit

    torch.manual_seed(seed)
    enc, dec = SpatialEncoder(cfg["sae_channels"]), SpatialDecoder(cfg["sae_channels"])
    both = nn.ModuleDict({"encoder": enc, "decoder": dec})
    x32 = nn.functional.pad(xtr, (2, 2, 2, 2), value=-1.0)
    pool = nn.functional.avg_pool2d

    def loss_fn(b, g):
        zmap = enc.spatial(b)
        rec = (dec.spatial(zmap) - b).pow(2).mean()
        if se_weight <= 0:
            return rec, {"mse": rec.detach()}
        se = (dec.spatial(pool(zmap, 2)) - pool(b, 2)).pow(2).mean()
        return rec + se_weight * se, {"mse": rec.detach(), "se": se.detach()}

    info = fit(both, loss_fn, x32, steps=cfg["ae_steps"], batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
               out=out, name="joint", resume=True, ckpt_every=500, clock="cpu", lr_schedule="cosine")
    return enc.eval(), dec.eval(), info


def build_encoder(name: str, xtr: torch.Tensor, cfg: Dict[str, Any], seed: int, cache: Path):
    """Train (or load from ``cache/<name>/``) one zoo member; returns ``(encoder, decoder, record)``."""
    from latentgeo.autoencoders import load_decoder, load_encoder, train_autoencoder

    kind, opt = ZOO[name]
    d = opt.get("latent_dim", cfg["latent_dim"])
    folder = cache / name
    folder.mkdir(parents=True, exist_ok=True)
    rec_file = folder / "encoder.json"
    done = rec_file.exists()
    c0, w0 = time.process_time(), time.perf_counter()
    if kind == "pca":
        enc = make_pca_family(xtr, d, opt["variant"], seed)
        dec = LinearFamilyDecoder(enc, xtr.shape[1:]).eval()
        info: Dict[str, Any] = {"variant": opt["variant"]}
    elif kind == "sae":
        sfile = folder / "sae.safetensors"
        if done and sfile.exists():
            enc = _load_state(SpatialEncoder(cfg["sae_channels"]), folder / "sae_encoder.safetensors")
            dec = _load_state(SpatialDecoder(cfg["sae_channels"]), sfile)
            info = {}
        else:
            enc, dec, r = train_sae(xtr, cfg, opt["se_weight"], seed, folder / "train")
            _save_state(enc, folder / "sae_encoder.safetensors")
            _save_state(dec, sfile)
            info = {"steps": r["steps"], "train_cpu_s": r["seconds"], "final": r["history"][-1]}
        d = 16 * cfg["sae_channels"]
    else:
        ae = folder / "ae"
        if done and (ae / "encoder.safetensors").exists():
            enc, dec = load_encoder(ae), load_decoder(ae)
            info = {}
        else:
            steps = cfg["ae_steps"] // 2 if kind == "gpe" else cfg["ae_steps"]
            enc, dec, info = train_autoencoder(
                kind, xtr, latent_dim=d, arch="mlp", enc_width=cfg["enc_width"], dec_width=cfg["dec_width"],
                steps=steps, decoder_steps=cfg["ae_steps"] // 2 if kind == "gpe" else None,
                kl_weight=opt.get("kl_weight", 0.1), batch_size=cfg["batch"], lr=cfg["lr"], seed=seed, out=ae,
                resume=True, lr_schedule="cosine")
            info = {k: info[k] for k in ("seconds", "encoder_stage", "decoder_stage", "joint_stage") if k in info}
    enc.eval(), dec.eval()
    if not done:
        record = {"name": name, "kind": kind, "options": opt, "latent_dim": d, "cpu_s": time.process_time() - c0,
                  "wall_s": time.perf_counter() - w0, "info": info}
        atomic_write_json(rec_file, record)
    record = json.loads(rec_file.read_text())
    for p in enc.parameters():
        p.requires_grad_(False)
    for p in dec.parameters():
        p.requires_grad_(False)
    return enc, dec, record


# ============================================================================================ ground truth

def _batched(fn: Callable, x: torch.Tensor, bs: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def ground_truth(name: str, enc, dec, xtr, ref, xrec, clf, cfg, seed: int, cache: Path,
                 flow_seed: Optional[int] = None, tag: str = "truth") -> Dict[str, Any]:
    """FD(gen), FD(recon) and the gap of one encoder (cached in ``cache/<name>/<tag>.json``)."""
    from latentgeo.flows import fit_flow, flow_sample
    from latentgeo.metrics import classifier_frechet_distance

    f = cache / name / f"{tag}.json"
    sizes = {"n_gen": int(cfg["n_gen"]), "n_ref": int(ref.shape[0]), "n_recon": int(xrec.shape[0])}
    old = json.loads(f.read_text()) if f.exists() else None
    if old is not None and all(old.get(k, cfg["n_gen"] if k == "n_gen" else 1000) == v for k, v in sizes.items()):
        return old
    flow_seed = seed if flow_seed is None else flow_seed
    z = _batched(enc, xtr).double()
    m = z.mean(0)
    c = math.sqrt(z.shape[1] / float((z - m).pow(2).sum(1).mean()))
    zn = ((z - m) * c).float()
    c0, w0 = time.process_time(), time.perf_counter()
    model = fit_flow(zn, steps=cfg["flow_steps"], batch_size=cfg["flow_batch"], seed=flow_seed,
                     out=cache / name / f"flow_{tag}", resume=True, progress=False, ckpt_every=500,
                     log_every=max(1, cfg["flow_steps"] // 10),
                     net_kwargs={"hidden": cfg["flow_hidden"], "depth": cfg["flow_depth"]})
    flow_cpu, flow_wall = time.process_time() - c0, time.perf_counter() - w0
    if old is not None:  # re-scored with other sample sizes: the flow was reloaded, its training cost is the old one
        flow_cpu, flow_wall = old["flow_cpu_s"], old["flow_wall_s"]
    fds = []
    c1 = time.process_time()
    for s in (1, 2):
        g = torch.Generator().manual_seed(flow_seed + 1000 * s)
        zs = flow_sample(model, torch.randn(cfg["n_gen"], zn.shape[1], generator=g), steps=cfg["ode_steps"],
                         method="heun").double()
        imgs = _batched(dec, (zs / c + m).float()).clamp(-1, 1)
        fds.append(classifier_frechet_distance(imgs, ref, clf))
    recon = _batched(lambda b: dec(enc(b)), xrec).clamp(-1, 1)
    fd_rec = classifier_frechet_distance(recon, ref, clf)
    out = {"fd_gen": float(np.mean(fds)), "fd_gen_per_sampling_seed": fds, "fd_recon": fd_rec,
           "gap": float(np.mean(fds)) - fd_rec, "recon_mse": float((recon - xrec).pow(2).mean()),
           "flow_cpu_s": flow_cpu, "flow_wall_s": flow_wall, "eval_cpu_s": time.process_time() - c1,
           "flow_seed": flow_seed, "latent_scale": c, **sizes}
    atomic_write_json(f, out)
    return out


# ============================================================================================ diagnostics

def diagnose_one(name: str, enc, dec, xd: torch.Tensor, pden, cfg, seed: int, cache: Path, force: bool = False
                 ) -> Dict[str, Any]:
    """``diagnose`` on one encoder, Fisher on (shared pixel denoiser ``pden``) and, where the installed diagnose
    has ``fisher=``, off; cached in ``cache/<name>/diag.json`` keyed by the diagnose signature."""
    from latentgeo.fisher.diagnosis import diagnose

    params = inspect.signature(diagnose).parameters
    key = {"signature": sorted(params), "n_diag": int(xd.shape[0]), "latent_steps": cfg["latent_steps"],
           "pixel_steps": cfg["pixel_steps"], "n_eval": cfg["n_eval"], "n_probes": cfg["n_probes"]}
    f = cache / name / "diag.json"
    if f.exists() and not force:
        old = json.loads(f.read_text())
        if old.get("key") == json.loads(json.dumps(key)):
            return old
    kw: Dict[str, Any] = dict(steps=cfg["pixel_steps"], latent_steps=cfg["latent_steps"], n_eval=cfg["n_eval"],
                              n_probes=cfg["n_probes"], n_penalty=cfg["n_penalty"], seed=seed, pixel_denoiser=pden)
    for k in ("n_geometry", "n_equivariance"):
        if k in params:
            kw[k] = cfg[k]
    if "decoders" in params:
        kw["decoders"] = {name: dec}
    res: Dict[str, Any] = {"key": key}
    c0, w0 = time.process_time(), time.perf_counter()
    s = diagnose({name: enc}, xd, **kw)
    res["full"] = {"entry": s["encoders"][name], "cpu_s": time.process_time() - c0,
                   "wall_s": time.perf_counter() - w0}
    if "fisher" in params:
        c0, w0 = time.process_time(), time.perf_counter()
        s2 = diagnose({name: enc}, xd, **{**kw, "fisher": False})
        res["cheap"] = {"entry": s2["encoders"][name], "cpu_s": time.process_time() - c0,
                        "wall_s": time.perf_counter() - w0}
    atomic_write_json(f, res)
    return res


def pixel_denoiser(xd: torch.Tensor, cfg, seed: int, cache: Path):
    """The pixel-space denoiser diagnose would train (same normalisation, net and settings), trained once and shared
    by every encoder's diagnosis; ``(denoiser, cpu seconds of its training or of the cached run)``."""
    from latentgeo.checkpoint import save
    from latentgeo.diffusion import fit_denoiser, load_denoiser
    from latentgeo.fisher.diagnosis import normalise

    f = cache / "pixel_denoiser.safetensors"
    meta = cache / "pixel_denoiser.json"
    key = {"n": int(xd.shape[0]), "steps": cfg["pixel_steps"], "seed": seed, "sum": float(xd.double().sum())}
    if f.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == key:
        return load_denoiser(f), json.loads(meta.read_text())["cpu_s"]
    u = normalise(xd)[0]
    c0 = time.process_time()
    den = fit_denoiser(u, net="mlp", steps=cfg["pixel_steps"], batch_size=256,
                       net_kwargs={"hidden": 256, "depth": 3}, seed=seed, progress=False)
    cpu = time.process_time() - c0
    save(den, f)
    atomic_write_json(meta, {"key": key, "cpu_s": cpu})
    return load_denoiser(f), cpu


# ============================================================================================ analysis

def analyse(rows: Dict[str, Dict[str, Any]], n_boot: int, seed: int, k: int = 3) -> Dict[str, Any]:
    """Correlations, leave-one-out score and a-priori score over the encoders in ``rows``
    (``{name: {"truth": ..., "diagnostics": {dotted: value}, "apriori_score": float|None}}``)."""
    names = list(rows)
    gap = [rows[n]["truth"]["gap"] for n in names]
    fdg = [rows[n]["truth"]["fd_gen"] for n in names]
    allk = sorted({kk for n in names for kk in rows[n]["diagnostics"]})
    table = {kk: [rows[n]["diagnostics"].get(kk, float("nan")) for n in names] for kk in allk}
    corr = {}
    for kk, vals in table.items():
        bg = bootstrap_spearman(vals, gap, n_boot, seed)
        bf = bootstrap_spearman(vals, fdg, n_boot, seed)
        if bg["rho"] is None and bf["rho"] is None:
            continue
        corr[kk] = {"n": bg["n"], "vs_gap": {x: bg[x] for x in ("rho", "lo", "hi")},
                    "vs_fd_gen": {x: bf[x] for x in ("rho", "lo", "hi")}}
    usable = {kk: table[kk] for kk in corr}
    loo = {}
    for kk in sorted({1, k, 5}):
        r = leave_one_out(usable, gap, k=kk)
        b = bootstrap_spearman(r["predictions"], gap, n_boot, seed)
        # score = -prediction (higher = more diffusable = smaller predicted gap)
        loo[f"top{kk}"] = {"spearman_predicted_vs_gap": r["spearman"], "ci": [b["lo"], b["hi"]],
                           "score": {n: -p for n, p in zip(names, r["predictions"])},
                           "chosen_per_fold": {n: c for n, c in zip(names, r["chosen"])}}
    apriori = [rows[n].get("apriori_score") for n in names]
    ap = None
    if any(v is not None for v in apriori):
        av = [float("nan") if v is None else v for v in apriori]
        b = bootstrap_spearman(av, gap, n_boot, seed)
        b2 = bootstrap_spearman(av, fdg, n_boot, seed)
        ap = {"spearman_score_vs_gap": b["rho"], "ci": [b["lo"], b["hi"]], "spearman_score_vs_fd_gen": b2["rho"],
              "ci_fd_gen": [b2["lo"], b2["hi"]], "score": dict(zip(names, apriori)),
              "note": "a higher score means more diffusable, so a good score correlates NEGATIVELY with the gap"}
    best = sorted(corr, key=lambda kk: -abs(corr[kk]["vs_gap"]["rho"] or 0))
    return {"correlations": corr, "best_by_abs_rho_vs_gap": best[:15], "leave_one_out": loo,
            "leave_one_out_primary": f"top{k}", "apriori_score": ap}


def _plot(rows, analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = analysis["best_by_abs_rho_vs_gap"][:5]
    panels = best + ["loo"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2))
    names = list(rows)
    gap = [rows[n]["truth"]["gap"] for n in names]
    for ax, kk in zip(np.atleast_1d(axes), panels):
        if kk == "loo":
            p = analysis["leave_one_out"][analysis["leave_one_out_primary"]]
            xs = [p["score"][n] for n in names]
            title = f"LOO score ({analysis['leave_one_out_primary']})\nrho={p['spearman_predicted_vs_gap'] or 0:.2f}"
        else:
            xs = [rows[n]["diagnostics"].get(kk, float("nan")) for n in names]
            title = f"{kk}\nrho={analysis['correlations'][kk]['vs_gap']['rho']:.2f}"
        ax.scatter(xs, gap, s=14)
        for x, y, n in zip(xs, gap, names):
            if np.isfinite(x):
                ax.annotate(n, (x, y), fontsize=6)
        ax.set_title(title, fontsize=7)
        ax.set_ylabel("FD(gen) - FD(recon)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _f(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _reading(analysis, controls, cost) -> str:
    corr = analysis["correlations"]
    strong = [kk for kk in analysis["best_by_abs_rho_vs_gap"]
              if corr[kk]["vs_gap"]["lo"] is not None and (corr[kk]["vs_gap"]["lo"] > 0 or corr[kk]["vs_gap"]["hi"] < 0)]
    weak = [kk for kk in corr if corr[kk]["vs_gap"]["lo"] is not None
            and corr[kk]["vs_gap"]["lo"] <= 0 <= corr[kk]["vs_gap"]["hi"]]
    prim = analysis["leave_one_out"][analysis["leave_one_out_primary"]]
    txt = (f"{len(strong)} of {len(corr)} scalar diagnostics have a 95% bootstrap interval of their Spearman "
           f"correlation with the generation gap that excludes 0 ({', '.join(strong[:8]) or 'none'}); "
           f"{len(weak)} do not (their intervals include 0, e.g. {', '.join(sorted(weak)[:6])}). ")
    rho = prim["spearman_predicted_vs_gap"]
    txt += (f"The leave-one-out score (top-3 signed rank features chosen on n-1 encoders) ranks the left-out "
            f"encoders by gap with Spearman {rho:.2f} (interval {_f(prim['ci'][0])}..{_f(prim['ci'][1])}); "
            f"goal >= 0.85: {'met' if rho is not None and rho >= 0.85 else 'not met'}. " if rho is not None else "")
    ap = analysis.get("apriori_score")
    if ap and ap["spearman_score_vs_gap"] is not None:
        txt += (f"The a-priori diffusability_score (DEFAULT_WEIGHTS) has Spearman {ap['spearman_score_vs_gap']:.2f} "
                f"with the gap (a good score is negative here). ")
    if cost.get("ratio_cheap") is not None:
        txt += (f"Cost: diagnose with Fisher = {cost['ratio_full']:.2f} x the flow training, without Fisher = "
                f"{cost['ratio_cheap']:.3f} x (goal <= 0.1). ")
    gr = analysis.get("ground_truth_reliability")
    if gr and gr["spearman_gap_seed1_vs_seed2"] is not None:
        txt += (f"The ground truth is noisy: the gap measured from two independent sample sets of the same flows "
                f"agrees with Spearman {gr['spearman_gap_seed1_vs_seed2']:.2f} (median |FD(gen) difference| "
                f"{gr['median_abs_fd_gen_difference_between_sampling_seeds']:.2f} against gaps spanning "
                f"{gr['gap_range'][0]:.2f}..{gr['gap_range'][1]:.2f}), which bounds what any diagnostic can reach. ")
    txt += controls.get("reading", "")
    return txt


# ============================================================================================ main

def main(argv=None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--cache", default=None, help="cache folder (default runs/zoo, quick: runs/zoo_quick)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/diffusability_zoo[_quick].json)")
    ap.add_argument("--encoders", default=None, help="comma-separated subset of the zoo (default: all)")
    ap.add_argument("--stage", default="all", choices=["truth", "all"], help="truth: encoders + ground truth only")
    ap.add_argument("--rediagnose", action="store_true", help="recompute the diagnostics even if cached")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-gen", type=int, default=None,
                    help="generated samples per FD (default: the preset's); the cached flows are re-scored")
    ap.add_argument("--n-test", type=int, default=None,
                    help="held-out images, half the FD reference, half reconstructed (default: the preset's)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    cfg = dict(PRESETS["quick" if a.quick else "full"])
    for k in ("n_gen", "n_test"):
        v = getattr(a, k)
        if v is not None:
            if v < 100:
                raise LatentgeoError(f"--{k.replace('_', '-')} must be >= 100 for a Frechet distance, got {v}")
            cfg[k] = v
    names = [n.strip() for n in a.encoders.split(",")] if a.encoders else list(ZOO)
    bad = [n for n in names if n not in ZOO]
    if bad:
        raise LatentgeoError(f"unknown encoder '{bad[0]}'; choose from: {', '.join(ZOO)}")
    if len(names) < 4:
        raise LatentgeoError("the leave-one-out analysis needs at least 4 encoders; pass more to --encoders")
    from latentgeo.runfolder import check_output_dir

    cache = Path(a.cache) if a.cache else ROOT / "runs" / ("zoo_quick" if a.quick else "zoo")
    check_output_dir(cache, "--cache")
    out = Path(a.out) if a.out else (cache / "diffusability_zoo_quick.json" if a.quick else
                                     ROOT / "benchmarks" / "results" / "diffusability_zoo.json")
    check_output_dir(out.parent, "--out folder")
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    t_cpu0, t_wall0 = time.process_time(), time.perf_counter()
    from latentgeo import data as ld
    from latentgeo.metrics import classifier_frechet_distance, load_or_fit_classifier

    xtr, ytr = ld.fashion_mnist(split="train", n=cfg["n_train"], return_labels=True)
    xte = ld.fashion_mnist(split="test", n=cfg["n_test"])
    half = cfg["n_test"] // 2
    ref, xrec = xte[:half], xte[half:]
    clf, cinfo = load_or_fit_classifier(cache, xtr, ytr, steps=cfg["clf_steps"], seed=a.seed)
    floor = classifier_frechet_distance(xrec, ref, clf)
    log = lambda *s: print(f"[zoo {time.strftime('%H:%M:%S')}]", *s, flush=True)  # noqa: E731

    models, truth, enc_rec = {}, {}, {}
    for n in names:
        enc, dec, rec = build_encoder(n, xtr, cfg, a.seed, cache)
        models[n], enc_rec[n] = (enc, dec), rec
        truth[n] = ground_truth(n, enc, dec, xtr, ref, xrec, clf, cfg, a.seed, cache)
        log(n, f"train {rec['cpu_s']:.1f}s  flow {truth[n]['flow_cpu_s']:.1f}s  FD(gen) {truth[n]['fd_gen']:.2f}  "
               f"FD(recon) {truth[n]['fd_recon']:.2f}  gap {truth[n]['gap']:.2f}")
    noise = None
    if "pca" in names:
        noise = ground_truth("pca", *models["pca"], xtr, ref, xrec, clf, cfg, a.seed, cache,
                             flow_seed=a.seed + 1, tag="truth_seed1")
        log("pca (flow seed 1)", f"FD(gen) {noise['fd_gen']:.2f}")
    result: Dict[str, Any] = {
        "benchmark": "diffusability_zoo", "preset": "quick" if a.quick else "full", "settings": cfg,
        "seed": a.seed, "encoders": names,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "torch": torch.__version__, "threads": a.threads, "load_average_at_start": list(os.getloadavg()),
        "settings_notes": {
            "arch_note": "learned latentgeo models use arch='mlp' (encoder width enc_width, decoder width "
                         "dec_width): on one CPU thread the conv encoder + wide decoder costs ~0.2 s/step against "
                         "~0.01 s/step, which would not fit the zoo into the 40-minute budget",
            "budget": "every learned model: ae_steps optimiser steps of batch `batch` (GPE: ae_steps/2 encoder + "
                      "ae_steps/2 decoder steps), Adam lr `lr` with a cosine decay to 0 over each stage, betas (0.5, 0.999), "
                      "seed `seed`; a first attempt at lr 1e-3 constant diverged mid-run (loss spikes to 1e4-1e7) "
                      "for ae, ae_mds and vae_kl1e-3 and was discarded",
            "sae": "spatial conv AE, latent [sae_channels, 4, 4] flattened; sae_se adds the scale-equivariance "
                   "loss with weight 1; trained by latentgeo.autoencoders.fit (same optimiser, steps, batch)",
            "fd": "classifier Frechet distance (latentgeo.metrics, small CNN trained on the labels); reference = "
                  "first half of the test images; FD(recon) from reconstructions of the second half",
            "pixel_denoiser": "one pixel-space denoiser (diagnose's own net and normalisation) trained once and "
                              "passed to every diagnose call"},
        "classifier": {"val_accuracy": cinfo.get("val_accuracy"), "cached": cinfo.get("cached")},
        "fd_real_floor": floor,
    }
    table: Dict[str, Any] = {n: {"encoder": enc_rec[n], "truth": truth[n]} for n in names}
    if a.stage == "truth":
        result["table"] = table
        result["status"] = "ground truth only (--stage truth); diagnostics not run"
        atomic_write_json(out, result)
        log("wrote", out)
        return result

    xd = xtr[:cfg["n_diag"]]
    pden, pden_cpu = pixel_denoiser(xd, cfg, a.seed, cache)
    log(f"pixel denoiser {pden_cpu:.1f}s")
    from latentgeo.fisher import diffusability as dfb

    rows = {}
    for n in names:
        dg = diagnose_one(n, *models[n], xd, pden, cfg, a.seed, cache, force=a.rediagnose)
        entry = dg["full"]["entry"]
        diag = {kk: v for kk, v in flatten_numeric(entry).items() if is_diagnostic(kk)}
        if "cheap" in dg:  # the fisher=False entry: its numbers equal the full one's except the Fisher ones
            diag.update({f"cheap.{kk}": v for kk, v in flatten_numeric(dg["cheap"]["entry"]).items()
                         if kk in ("score",)})
        try:
            aps = dfb.diffusability_score(entry, dfb.DEFAULT_WEIGHTS)
        except Exception as exc:  # noqa: BLE001 - a library in flux: record, do not stop the benchmark
            aps = None
            result.setdefault("errors", []).append(f"{n}: diffusability_score: {exc}")
        table[n]["diagnose_cpu_s"] = dg["full"]["cpu_s"]
        table[n]["diagnose_cheap_cpu_s"] = dg.get("cheap", {}).get("cpu_s")
        table[n]["timing_s"] = entry.get("timing_s")
        table[n]["diagnostics"] = diag
        table[n]["apriori_score"] = aps
        rows[n] = {"truth": truth[n], "diagnostics": diag, "apriori_score": aps}
        log(n, f"diagnose {dg['full']['cpu_s']:.1f}s (cheap {table[n]['diagnose_cheap_cpu_s']})  score {aps}")

    analysis = analyse(rows, cfg["n_boot"], a.seed)
    # How rankable is the ground truth itself? The gap measured with sampling seed 1 against the gap measured with
    # sampling seed 2 (same flows, same decoders): the Spearman a perfect predictor could at best expect.
    g1 = [truth[n]["fd_gen_per_sampling_seed"][0] - truth[n]["fd_recon"] for n in names]
    g2 = [truth[n]["fd_gen_per_sampling_seed"][1] - truth[n]["fd_recon"] for n in names]
    rel = bootstrap_spearman(g1, g2, cfg["n_boot"], a.seed)
    diffs = [abs(x - y) for x, y in zip(g1, g2)]
    analysis["ground_truth_reliability"] = {
        "spearman_gap_seed1_vs_seed2": rel["rho"], "ci": [rel["lo"], rel["hi"]],
        "median_abs_fd_gen_difference_between_sampling_seeds": float(np.median(diffs)),
        "gap_range": [min(truth[n]["gap"] for n in names), max(truth[n]["gap"] for n in names)],
        "note": "FD(gen) from two independent sets of n_gen samples of the same flow; the gap used in the "
                "analysis averages the two"}
    # controls
    ctl: Dict[str, Any] = {}
    if {"pca", "pca_rot"} <= set(names):
        noise_fd = abs(noise["fd_gen"] - truth["pca"]["fd_gen"]) if noise else None
        samp = float(np.std(truth["pca"]["fd_gen_per_sampling_seed"], ddof=1)) * math.sqrt(2)
        ctl["fd_gen"] = {n: truth[n]["fd_gen"] for n in ("pca", "pca_rot", "pca_ripple", "pca_aniso") if n in truth}
        ctl["gap"] = {n: truth[n]["gap"] for n in ctl["fd_gen"]}
        ctl["fd_gen_pca_flow_seed1"] = noise["fd_gen"] if noise else None
        ctl["fd_noise_flow_seed"] = noise_fd
        ctl["fd_noise_sampling_diff"] = samp
        lim = 2 * max(noise_fd or 0.0, samp)
        ctl["rotated_fd_within_noise"] = abs(truth["pca_rot"]["fd_gen"] - truth["pca"]["fd_gen"]) <= lim
        sc = {n: rows[n]["apriori_score"] for n in ctl["fd_gen"]}
        ctl["apriori_score"] = sc
        loo_sc = analysis["leave_one_out"][analysis["leave_one_out_primary"]]["score"]
        ctl["loo_score"] = {n: loo_sc[n] for n in ctl["fd_gen"]}
        if sc.get("pca") is not None and sc.get("pca_rot") is not None:
            ctl["rotated_score_difference"] = sc["pca_rot"] - sc["pca"]
            allsc = [rows[n]["apriori_score"] for n in names if rows[n]["apriori_score"] is not None]
            ctl["zoo_score_range"] = max(allsc) - min(allsc)
            ctl["rotated_score_difference_over_zoo_range"] = ctl["rotated_score_difference"] / max(
                ctl["zoo_score_range"], 1e-12)
        for v in ("pca_ripple", "pca_aniso"):
            if v in sc and sc[v] is not None and sc.get("pca") is not None:
                ctl[f"{v}_scores_worse_than_pca"] = sc[v] < sc["pca"]
                ctl[f"{v}_fd_gen_worse_than_pca"] = truth[v]["fd_gen"] > truth["pca"]["fd_gen"] + lim
                ctl[f"{v}_loo_score_worse_than_pca"] = ctl["loo_score"][v] < ctl["loo_score"]["pca"]
        ctl["reading"] = (f"Rotated PCA: FD(gen) {truth['pca_rot']['fd_gen']:.2f} vs PCA {truth['pca']['fd_gen']:.2f}"
                          f" (flow-seed noise {noise_fd if noise_fd is None else round(noise_fd, 2)}): "
                          f"{'within' if ctl['rotated_fd_within_noise'] else 'outside'} 2x noise; a-priori score "
                          f"difference {ctl.get('rotated_score_difference')}. ")
    # cost
    flow_cpu = float(np.mean([truth[n]["flow_cpu_s"] for n in names]))
    diag_cpu = float(np.mean([table[n]["diagnose_cpu_s"] for n in names]))
    cheap = [table[n]["diagnose_cheap_cpu_s"] for n in names]
    cheap_cpu = float(np.mean(cheap)) if all(c is not None for c in cheap) else None
    cost = {"flow_train_cpu_s_mean": flow_cpu, "diagnose_full_cpu_s_mean": diag_cpu,
            "diagnose_cheap_cpu_s_mean": cheap_cpu, "pixel_denoiser_cpu_s_once": pden_cpu,
            "ratio_full": (diag_cpu + pden_cpu / len(names)) / flow_cpu,
            "ratio_full_pixel_denoiser_charged_per_encoder": (diag_cpu + pden_cpu) / flow_cpu,
            "ratio_cheap": cheap_cpu / flow_cpu if cheap_cpu is not None else None,
            "note": "per encoder, process CPU seconds, one thread; ratio_full amortises the shared pixel denoiser "
                    "over the zoo; the latent generator is the zoo's small flow-matching MLP (flow_steps steps)"}
    cost["per_part"] = _part_costs(table, names, flow_cpu, analysis)
    result.update(table=table, analysis=analysis, controls=ctl, cost=cost)
    result["reading"] = _reading(analysis, ctl, cost)
    result["cpu_seconds_this_process"] = time.process_time() - t_cpu0
    result["wall_seconds_this_process"] = time.perf_counter() - t_wall0
    result["cpu_seconds_total_cached"] = (sum(enc_rec[n]["cpu_s"] + truth[n]["flow_cpu_s"] + truth[n]["eval_cpu_s"]
                                              + table[n]["diagnose_cpu_s"] + (table[n]["diagnose_cheap_cpu_s"] or 0)
                                              for n in names) + pden_cpu
                                          + (noise["flow_cpu_s"] + noise["eval_cpu_s"] if noise else 0))
    atomic_write_json(out, result)
    _plot(rows, analysis, out.with_suffix(".png"))
    log("wrote", out)
    print(result["reading"], flush=True)
    return result


#: which timed part of diagnose computes a diagnostic (first segment of its dotted name)
_PART_OF = {"tangential": "penalties", "curvature": "penalties", "curvature_at_scale": "penalties",
            "compression": "penalties", "latent_manifold_curvature": "penalties", "neighbourhood": "neighbourhood",
            "reconstruction": "reconstruction", "spectrum": "spectrum", "equivariance": "equivariance",
            "latent_stats": "latent_stats"}


def _part_costs(table: Dict[str, Any], names: Sequence[str], flow_cpu: float, analysis: Dict[str, Any]
                ) -> Dict[str, Any]:
    """CPU seconds of each timed part of diagnose (mean over the zoo) as a ratio to training the latent generator,
    and the cost of the diagnostics that correlate best with the gap (a user who wants only those pays that)."""
    parts: Dict[str, List[float]] = {}
    for n in names:
        for k, v in (table[n].get("timing_s") or {}).items():
            if isinstance(v, (int, float)) and k != "total":
                parts.setdefault(k, []).append(float(v))
    fisher = [sum(float((table[n].get("timing_s") or {}).get(k, 0.0)) for k in ("denoiser", "fisher_curves"))
              for n in names]
    mean = {k: float(np.mean(v)) for k, v in parts.items()}
    out: Dict[str, Any] = {"cpu_s_mean": mean, "ratio_to_flow": {k: v / flow_cpu for k, v in mean.items()},
                           "fisher_latent_part_ratio": float(np.mean(fisher)) / flow_cpu}
    corr = analysis.get("correlations") or {}
    best = []
    for name, c in corr.items():
        rho = (c.get("vs_gap") or {}).get("rho")
        if rho is not None and math.isfinite(rho):
            best.append((abs(rho), name))
    best.sort(reverse=True)
    rows = []
    for _, name in best[:5]:
        seg = name.split(".")[0]
        part = _PART_OF.get(seg or "", "fisher" if (seg or "").startswith(("d_r", "d_i")) else None)
        ratio = (float(np.mean(fisher)) / flow_cpu if part == "fisher" else
                 out["ratio_to_flow"].get(part) if part else None)
        rows.append({"diagnostic": name, "part": part, "ratio_to_flow": ratio})
    out["best_diagnostics_cost"] = rows
    return out


if __name__ == "__main__":
    try:
        main()
    except LatentgeoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
