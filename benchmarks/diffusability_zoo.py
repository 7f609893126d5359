"""Diffusability zoo, redesigned (issue 19): do latentgeo's measures predict how well a generator does on a latent?

Fashion-MNIST (images in [-1, 1]); three families of encoders, each with an exact or trained decoder:

- **A** spatial conv autoencoders, latent ``c x 7 x 7``, one architecture and budget, differing only in a regulariser:
  ``c`` in {2, 4, 8}; KL weight 1e-4 / 1e-2 (a VAE posterior; the encoder used is its mean); latent-noise
  augmentation of the decoder (sigma 0.3 / 0.7 of the latent RMS); scale equivariance (``|D(down z) - down x|^2``);
  alignment of a linear head of the latent to the frozen classifier's features; checkpoints at 25 / 50 % of the base.
- **B** exact-decoder transforms of two base encoders of family A (reconstruction identical, only the latent layout
  changes): a channel rotation (null control), per-channel scaling at condition numbers 3 / 10 / 30, a checkerboard
  sign flip ``z (-1)^(i+j)``, a fixed permutation of the 49 positions, a per-channel ripple ``z + eps sin(omega z)``
  (``eps omega = 0.9``, inverted exactly by bisection), ``c`` appended channels of deterministic pseudo-noise that the
  decoder ignores.
- **C** the previous zoo's vector latents: PCA, rotated PCA, anisotropic PCA (cond 30), ripple PCA (16 dims, exact
  decoders), a latentgeo MLP AE and beta-VAE (kl 1e-2).

Ground truth, per encoder: the training latents normalised (mean 0, per-coordinate RMS 1); a flow-matching generator
-- a small conv velocity net for the spatial families A / B, latentgeo's MLP flow for C -- trained with
``n_train_seeds`` seeds, each sampled with ``n_sample_seeds`` seeds (Heun), decoded, clamped and scored by the
classifier Frechet distance (CFD, :mod:`latentgeo.metrics.classifier`) against held-out test images: FD(gen) = mean
over the cells; FD(recon) from reconstructions of other held-out images; gap = FD(gen) - FD(recon).
The seed ceiling: the Spearman agreement of two single-training-seed ground truths (mean over the seed pairs).

Diagnostics: :func:`latentgeo.fisher.diagnosis.diagnose` with ``fisher=False`` (the Fisher part is left out: the
previous zoo found no signal in it at 20x the cost), the zoo's classifier as the feature space and the labels (VIV,
LNC), plus a cheap-generator reference (a flow at a tenth of the ground truth's budget).

The score is fixed here, before any ground truth was read: :data:`SCORE_MEASURES`, a rank average (no weights).
Statistics: Spearman with percentile-bootstrap intervals pooled over the zoo and within each family; the score's
Spearman on each family left out (no fitting: the recipe is fixed) and its mean; a leave-one-family-out top-k
selection of measures (chosen on the other families); whether each measure orders family B's controls correctly.
Everything per encoder is cached under ``<cache>/<name>/`` (resumable); the JSON is rewritten after every encoder.

    OMP_NUM_THREADS=1 python benchmarks/diffusability_zoo.py            # reduced-scale preset (about 1 CPU hour)
    OMP_NUM_THREADS=1 python benchmarks/diffusability_zoo.py --quick    # smoke run

Writes ``benchmarks/results/diffusability_zoo.json`` (+ ``.png``) and, with ``--package-data``, the correlations
that ``diagnose``'s report shows (``latentgeo/fisher/zoo_validation.json``).
"""
from __future__ import annotations

import argparse
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
import torch.nn.functional as Fn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json  # noqa: E402
from latentgeo.errors import LatentgeoError  # noqa: E402

PRESETS: Dict[str, Dict[str, Any]] = {
    "full": dict(n_train=3000, n_test=1000, ae_steps=600, batch=64, lr=2e-3, width=16, mlp_latent=16,
                 flow_steps=400, flow_batch=128, flow_width=48, mlp_hidden=192, n_gen=500, ode_steps=12,
                 n_train_seeds=3, n_sample_seeds=2, clf_steps=400, n_generation=400, n_penalty=48,
                 n_geometry=400, n_equivariance=48, n_boot=1000, reference_fraction=0.1),
    "quick": dict(n_train=400, n_test=200, ae_steps=20, batch=32, lr=2e-3, width=8, mlp_latent=16,
                  flow_steps=20, flow_batch=64, flow_width=16, mlp_hidden=32, n_gen=100, ode_steps=4,
                  n_train_seeds=2, n_sample_seeds=2, clf_steps=20, n_generation=60, n_penalty=12,
                  n_geometry=60, n_equivariance=8, n_boot=100, reference_fraction=0.1),
}

#: the score, fixed before any ground truth was read: (dotted measure of a diagnose entry, +1 if higher = worse)
SCORE_MEASURES: Tuple[Tuple[str, int], ...] = (
    ("interpolation.alpha_0.5.fd", +1),
    ("noise_sensitivity.s_0.3.fd_minus_recon", +1),
    ("class_structure.lnc", -1),
)

#: family A: name -> training options (c channels, kl weight, noise sigma, scale-equivariance weight, alignment)
FAMILY_A: Dict[str, Dict[str, Any]] = {
    "a_c4": {}, "a_c2": {"c": 2}, "a_c8": {"c": 8}, "a_kl1e-4": {"kl": 1e-4}, "a_kl1e-2": {"kl": 1e-2},
    "a_noise0.3": {"noise": 0.3}, "a_noise0.7": {"noise": 0.7}, "a_se": {"se": 1.0}, "a_align": {"align": 0.5},
}
CHECKPOINTS = {"a_c4_ck25": ("a_c4", 0.25), "a_c4_ck50": ("a_c4", 0.5)}
B_BASES = ("a_c4", "a_kl1e-4")
B_TRANSFORMS = ("rot", "scale3", "scale10", "scale30", "checker", "perm", "ripple", "noisech")
FAMILY_C = {"c_pca": "plain", "c_pca_rot": "rotated", "c_pca_aniso": "aniso", "c_pca_ripple": "ripple",
            "c_ae": "ae", "c_vae": "vae"}


def zoo_names() -> List[str]:
    names = list(FAMILY_A) + list(CHECKPOINTS)
    names += [f"b_{b}_{t}" for b in B_BASES for t in B_TRANSFORMS]
    return names + list(FAMILY_C)


def family_of(name: str) -> str:
    return {"a": "A", "b": "B", "c": "C"}[name[0]]


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


def top_signed(cols: Mapping[str, np.ndarray], y: np.ndarray, train: np.ndarray, usable: Callable[[np.ndarray], bool],
               k: int) -> List[Tuple[float, str, float]]:
    """The ``k`` measures most correlated (|Spearman| on the ``train`` items) with ``y``, as ``(-|r|, name, sign)``;
    a measure is eligible when ``usable(column)``; ties broken by name."""
    cand = []
    for nm in sorted(cols):
        x = cols[nm]
        if not usable(x):
            continue
        r = spearman(x[train], y[train])
        if r is not None:
            cand.append((-abs(r), nm, 1.0 if r >= 0 else -1.0))
    cand.sort()
    return cand[:k]


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
        top = top_signed(cols, y, tr, lambda x: bool(np.isfinite(x[i])) and np.isfinite(x[tr]).sum() >= min_items,
                         k)
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



# ============================================================================================ family A: conv AEs

class ConvEncoder(nn.Module):
    """``x [B, 1, 28, 28] -> [B, c, 7, 7]`` (two stride-2 convs, SiLU); with ``kl`` the head also gives a log-variance
    (``forward`` returns the mean: the deterministic encoder that is diagnosed and diffused)."""

    def __init__(self, c: int, width: int, kl: bool = False):
        super().__init__()
        self.c, self.kl = c, kl
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 3, 2, 1),
                                  nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.SiLU())
        self.head = nn.Conv2d(2 * width, 2 * c if kl else c, 1)

    def stats(self, x):
        h = self.head(self.body(x.reshape(x.shape[0], 1, 28, 28)))
        return (h[:, :self.c], h[:, self.c:]) if self.kl else (h, None)

    def forward(self, x):
        return self.stats(x)[0]


class ConvDecoder(nn.Module):
    """``[B, c, h, w] -> [B, 1, 4h, 4w]``, fully convolutional (so a 4x4 pooled latent decodes to 16x16)."""

    def __init__(self, c: int, width: int):
        super().__init__()
        self.c = c
        self.net = nn.Sequential(nn.Conv2d(c, 2 * width, 3, 1, 1), nn.SiLU(), nn.Upsample(scale_factor=2),
                                 nn.Conv2d(2 * width, width, 3, 1, 1), nn.SiLU(), nn.Upsample(scale_factor=2),
                                 nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(), nn.Conv2d(width, 1, 3, 1, 1))

    def forward(self, z):
        return self.net(z.reshape(z.shape[0], self.c, *z.shape[-2:]) if z.ndim == 4 else
                        z.reshape(z.shape[0], self.c, 7, 7))


def _save_state(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save as st_save

    atomic_write_bytes(path, st_save({k: v.contiguous() for k, v in module.state_dict().items()}))


def _load_state(module: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load as st_load

    module.load_state_dict(st_load(path.read_bytes()))
    return module.eval()


def train_conv_ae(xtr, cfg, opt, seed, folder: Path, clf=None):
    """Train one family-A member (Adam, cosine decay, ``ae_steps`` x batch ``batch``, seeded); saves the encoder and
    decoder at 25 / 50 / 100 % of the steps (``ck25``, ``ck50``, ``final``). Loss: per-pixel MSE + ``kl`` x mean KL
    per latent element + ``se`` x ``|D(pool z) - area(x, 16)|^2`` + ``align`` x ``(1 - cos(head(z), f(x)))``;
    with ``noise`` the decoder sees ``z + noise * rms(z) * eps``."""
    c = opt.get("c", 4)
    torch.manual_seed(seed)
    enc, dec = ConvEncoder(c, cfg["width"], kl=opt.get("kl", 0) > 0), ConvDecoder(c, cfg["width"])
    params = list(enc.parameters()) + list(dec.parameters())
    head = None
    if opt.get("align"):
        with torch.no_grad():
            fdim = clf.features(xtr[:2]).shape[1]
        head = nn.Linear(c * 49, fdim)
        params += list(head.parameters())
    optim = torch.optim.Adam(params, lr=cfg["lr"])
    steps = cfg["ae_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    marks = {max(1, int(round(0.25 * steps))): "ck25", max(1, int(round(0.5 * steps))): "ck50", steps: "final"}
    hist = []
    for step in range(1, steps + 1):
        xb = xtr[torch.randint(0, xtr.shape[0], (cfg["batch"],), generator=g)]
        mu, lv = enc.stats(xb)
        z = mu
        loss = torch.zeros(())
        if lv is not None:
            z = mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=g)
            loss = loss + opt["kl"] * 0.5 * (mu ** 2 + lv.exp() - lv - 1).mean()
        zd = z
        if opt.get("noise"):
            rms = z.detach().pow(2).mean().sqrt()
            zd = z + opt["noise"] * rms * torch.randn(z.shape, generator=g)
        rec = (dec(zd) - xb).pow(2).mean()
        loss = loss + rec
        if opt.get("se"):
            zp = Fn.avg_pool2d(z, 2, ceil_mode=True)
            loss = loss + opt["se"] * (dec(zp) - Fn.interpolate(xb, size=(16, 16), mode="area")).pow(2).mean()
        if head is not None:
            with torch.no_grad():
                fx = clf.features(xb)
            loss = loss + opt["align"] * (1 - Fn.cosine_similarity(head(z.flatten(1)), fx, dim=1)).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        if step % max(1, steps // 10) == 0:
            hist.append([step, float(rec.detach())])
        if step in marks:
            _save_state(enc, folder / f"enc_{marks[step]}.safetensors")
            _save_state(dec, folder / f"dec_{marks[step]}.safetensors")
    return hist


# ============================================================================================ family B: transforms

class Transformed(nn.Module):
    """An exact, invertible map ``T`` of a base spatial latent ``[B, c, 7, 7]``: encoder ``T(E(x))``, decoder
    ``D(T^-1(z))`` -- the reconstructions are the base's (up to float rounding), only the latent layout changes."""

    def __init__(self, base_enc, base_dec, kind: str, c: int, zstd: torch.Tensor, seed: int):
        super().__init__()
        self.base_enc, self.base_dec, self.kind, self.c = base_enc, base_dec, kind, c
        g = torch.Generator().manual_seed(seed + 7)
        self.R = self.s = self.perm = self.inv_perm = self.omega = self.eps = self.P = None
        if kind == "rot":
            Q, Rr = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
            self.R = (Q * torch.sign(torch.diagonal(Rr))).float()
        elif kind.startswith("scale"):
            kappa = float(kind[5:])
            self.s = torch.logspace(math.log10(kappa), 0.0, c).float()
        elif kind == "perm":
            self.perm = torch.randperm(49, generator=g)
            self.inv_perm = torch.argsort(self.perm)
        elif kind == "ripple":
            self.omega = (4 * math.pi / zstd).float()
            self.eps = 0.9 / self.omega
        elif kind == "noisech":
            self.P = torch.randn(784, c * 49, generator=g) * 0.5
            self.zstd = zstd.float()
        self.sign = ((-1.0) ** (torch.arange(7)[:, None] + torch.arange(7)[None, :])).float()

    def encode(self, x):
        z = self.base_enc(x)
        k = self.kind
        if k == "rot":
            return torch.einsum("ij,bjhw->bihw", self.R, z)
        if k.startswith("scale"):
            return z * self.s[None, :, None, None]
        if k == "checker":
            return z * self.sign
        if k == "perm":
            return z.flatten(2)[:, :, self.perm].reshape(z.shape)
        if k == "ripple":
            om, ep = self.omega[None, :, None, None], self.eps[None, :, None, None]
            return z + ep * torch.sin(om * z)
        if k == "noisech":  # deterministic pseudo-noise of the image (a high-frequency hash), the latent's scale
            nz = torch.sin(1e3 * (x.reshape(x.shape[0], -1) @ self.P)).reshape(x.shape[0], self.c, 7, 7) * math.sqrt(2)
            return torch.cat([z, nz * self.zstd.mean()], 1)
        raise LatentgeoError(f"unknown transform {k}")

    def decode(self, z):
        k = self.kind
        if k == "rot":
            z = torch.einsum("ji,bjhw->bihw", self.R, z)
        elif k.startswith("scale"):
            z = z / self.s[None, :, None, None]
        elif k == "checker":
            z = z * self.sign
        elif k == "perm":
            z = z.flatten(2)[:, :, self.inv_perm].reshape(z.shape)
        elif k == "ripple":
            zd = z.double()
            om, ep = self.omega[None, :, None, None].double(), self.eps[None, :, None, None].double()
            lo, hi = zd - ep, zd + ep
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                big = mid + ep * torch.sin(om * mid) > zd
                hi, lo = torch.where(big, mid, hi), torch.where(big, lo, mid)
            z = (0.5 * (lo + hi)).to(z.dtype)
        elif k == "noisech":
            z = z[:, :self.c]
        return self.base_dec(z)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, v):
        return self.fn(v)


# ============================================================================================ encoders

def _freeze(m):
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def build_all(names: Sequence[str], xtr, ytr, cfg, seed, cache: Path, clf, log) -> Dict[str, Any]:
    """``{name: (encoder, decoder, record)}``, training (or loading) every model the names need."""
    from latentgeo.autoencoders import load_decoder, load_encoder, train_autoencoder

    out: Dict[str, Any] = {}
    need_a = {n for n in names if n in FAMILY_A} | {CHECKPOINTS[n][0] for n in names if n in CHECKPOINTS}
    need_a |= {b for n in names if n.startswith("b_") for b in B_BASES if n.startswith(f"b_{b}_")}
    trained: Dict[str, Dict[str, Any]] = {}
    for a in [n for n in FAMILY_A if n in need_a]:
        folder = cache / a
        folder.mkdir(parents=True, exist_ok=True)
        rec_f = folder / "encoder.json"
        if not rec_f.exists():
            c0 = time.process_time()
            hist = train_conv_ae(xtr, cfg, FAMILY_A[a], seed, folder, clf=clf)
            atomic_write_json(rec_f, {"name": a, "options": FAMILY_A[a], "cpu_s": time.process_time() - c0,
                                      "history_mse": hist})
            log(a, f"trained in {time.process_time() - c0:.1f} CPU s, final MSE {hist[-1][1]:.4f}")
        trained[a] = json.loads(rec_f.read_text())

    def load_a(a, tag="final"):
        c = FAMILY_A[a].get("c", 4)
        e = _load_state(ConvEncoder(c, cfg["width"], kl=FAMILY_A[a].get("kl", 0) > 0), cache / a / f"enc_{tag}.safetensors")
        d = _load_state(ConvDecoder(c, cfg["width"]), cache / a / f"dec_{tag}.safetensors")
        return _freeze(e), _freeze(d)

    for n in names:
        fam = family_of(n)
        if n in FAMILY_A:
            e, d = load_a(n)
            out[n] = (e, d, {"family": "A", "options": FAMILY_A[n], "train_cpu_s": trained[n]["cpu_s"]})
        elif n in CHECKPOINTS:
            base, frac = CHECKPOINTS[n]
            e, d = load_a(base, "ck25" if frac == 0.25 else "ck50")
            out[n] = (e, d, {"family": "A", "options": {"checkpoint_of": base, "fraction": frac},
                             "train_cpu_s": trained[base]["cpu_s"] * frac})
        elif fam == "B":
            base = next(b for b in B_BASES if n.startswith(f"b_{b}_"))
            kind = n[len(f"b_{base}_"):]
            e, d = load_a(base)
            with torch.no_grad():
                zb = torch.cat([e(xtr[i:i + 500]) for i in range(0, xtr.shape[0], 500)])
            zstd = zb.transpose(0, 1).reshape(zb.shape[1], -1).std(1)
            t = Transformed(e, d, kind, FAMILY_A[base].get("c", 4), zstd, seed)
            out[n] = (_freeze(_Fn(t.encode)), _freeze(_Fn(t.decode)),
                      {"family": "B", "options": {"base": base, "transform": kind}, "train_cpu_s": 0.0})
        else:
            kind = FAMILY_C[n]
            folder = cache / n
            folder.mkdir(parents=True, exist_ok=True)
            if kind in ("ae", "vae"):
                ae = folder / "ae"
                rec_f = folder / "encoder.json"
                if rec_f.exists() and (ae / "encoder.safetensors").exists():
                    e, d = load_encoder(ae), load_decoder(ae)
                else:
                    c0 = time.process_time()
                    e, d, _ = train_autoencoder(kind, xtr, latent_dim=cfg["mlp_latent"], arch="mlp", enc_width=256,
                                                dec_width=256, steps=cfg["ae_steps"], kl_weight=1e-2,
                                                batch_size=cfg["batch"], lr=1e-3, seed=seed, out=ae, resume=True,
                                                lr_schedule="cosine")
                    atomic_write_json(rec_f, {"name": n, "cpu_s": time.process_time() - c0})
                cpu = json.loads(rec_f.read_text())["cpu_s"]
                out[n] = (_freeze(e), _freeze(d), {"family": "C", "options": {"kind": kind}, "train_cpu_s": cpu})
            else:
                e = make_pca_family(xtr, cfg["mlp_latent"], kind, seed)
                d = LinearFamilyDecoder(e, xtr.shape[1:])
                out[n] = (_freeze(e), _freeze(d), {"family": "C", "options": {"kind": f"pca_{kind}"},
                                                   "train_cpu_s": 0.0})
    return out


# ============================================================================================ generators

@torch.no_grad()
def _batched(fn: Callable, x: torch.Tensor, bs: int = 500) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


class ConvVelocity(nn.Module):
    """A small conv velocity field for ``[B, c, h, w]`` latents: 4 conv3x3 layers (SiLU) on the latent concatenated
    with Fourier features of ``t`` broadcast over the grid (zero padding: position is seen at the borders only)."""

    def __init__(self, c: int, width: int):
        super().__init__()
        self.freqs = torch.arange(1, 5).float() * math.pi
        cin = c + 9
        self.net = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1), nn.SiLU(), nn.Conv2d(width, width, 3, 1, 1),
                                 nn.SiLU(), nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(),
                                 nn.Conv2d(width, c, 3, 1, 1))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1)
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        emb = torch.cat([t[:, None], torch.sin(t[:, None] * self.freqs), torch.cos(t[:, None] * self.freqs)], 1)
        emb = emb[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.net(torch.cat([x, emb], 1))


def train_generator(zn: torch.Tensor, steps: int, seed: int, cfg, kind: str = "auto") -> Tuple[Callable, float]:
    """Flow matching (independent coupling, linear path, target ``z1 - z0``) on normalised latents; conv net for
    ``[N, c, h, w]``, latentgeo's MLP flow (:func:`latentgeo.flows.fit_flow`) for vectors. ``(velocity, CPU s)``."""
    c0 = time.process_time()
    if zn.ndim == 4 and kind == "mlp":  # the MLP flow on the flattened spatial latent
        from latentgeo.flows import fit_flow

        shape = zn.shape[1:]
        flat = fit_flow(zn.flatten(1), steps=steps, batch_size=cfg["flow_batch"], seed=seed, progress=False,
                        ema=0.99, net_kwargs={"hidden": cfg["mlp_hidden"], "depth": 3})

        def model(x, t, flat=flat, shape=shape):
            return flat(x.flatten(1), t).reshape(x.shape[0], *shape)
        return model, time.process_time() - c0
    if zn.ndim == 4:
        torch.manual_seed(seed)
        model = ConvVelocity(zn.shape[1], cfg["flow_width"])
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        ema = [p.detach().clone() for p in model.parameters()]
        for _ in range(steps):
            z1 = zn[torch.randint(0, zn.shape[0], (cfg["flow_batch"],), generator=g)]
            z0 = torch.randn(z1.shape, generator=g)
            t = torch.rand(z1.shape[0], generator=g)
            tv = t[:, None, None, None]
            loss = (model((1 - tv) * z0 + tv * z1, t) - (z1 - z0)).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema, model.parameters()):
                    e.mul_(0.99).add_(p.detach(), alpha=0.01)
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                p.copy_(e)
        return model.eval(), time.process_time() - c0
    from latentgeo.flows import fit_flow

    model = fit_flow(zn, steps=steps, batch_size=cfg["flow_batch"], seed=seed, progress=False, ema=0.99,
                     net_kwargs={"hidden": cfg["mlp_hidden"], "depth": 3})
    return model, time.process_time() - c0


def _normalised(enc, xtr):
    z = _batched(enc, xtr).double()
    m = z.mean(0)
    c = math.sqrt(z[0].numel() / float((z - m).pow(2).flatten(1).sum(1).mean()))
    return ((z - m) * c).float(), m, c


def ground_truth(name, enc, dec, xtr, ref, xrec, clf, cfg, seed, cache: Path, kind: str = "auto"
                 ) -> Dict[str, Any]:
    """FD(gen) per (training seed, sampling seed), FD(recon), the gap; the cheap reference (a tenth of the steps);
    cached in ``cache/<name>/truth.json`` (and per cell, so an interrupted encoder resumes mid-way)."""
    from latentgeo.flows import flow_sample
    from latentgeo.metrics import classifier_frechet_distance

    f = cache / name / ("truth.json" if kind == "auto" else f"truth_{kind}.json")
    key = {k: cfg[k] for k in ("flow_steps", "n_gen", "ode_steps", "n_train_seeds", "n_sample_seeds", "flow_width",
                               "mlp_hidden", "reference_fraction")}
    if f.exists():
        old = json.loads(f.read_text())
        if old.get("key") == key:
            return old
    zn, m, c = _normalised(enc, xtr)
    cells, flow_cpu, eval_cpu = {}, [], 0.0

    def fd_of(model, sseed):
        g = torch.Generator().manual_seed(10_000 + sseed)
        zs = flow_sample(model, torch.randn((cfg["n_gen"],) + tuple(zn.shape[1:]), generator=g),
                         steps=cfg["ode_steps"], method="heun").double()
        imgs = _batched(dec, (zs / c + m).float()).clamp(-1, 1)
        return classifier_frechet_distance(imgs, ref, clf)

    for ts in range(cfg["n_train_seeds"]):
        model, cpu = train_generator(zn, cfg["flow_steps"], seed + 100 * ts, cfg, kind)
        flow_cpu.append(cpu)
        c1 = time.process_time()
        for ss in range(cfg["n_sample_seeds"]):
            cells[f"t{ts}_s{ss}"] = fd_of(model, ss + 10 * ts)
        eval_cpu += time.process_time() - c1
    ref_steps = max(1, int(round(cfg["reference_fraction"] * cfg["flow_steps"])))
    rmodel, rcpu = train_generator(zn, ref_steps, seed + 7777, cfg, kind)
    ref_fd = fd_of(rmodel, 99)
    recon = _batched(lambda b: dec(enc(b)), xrec).clamp(-1, 1)
    fd_rec = classifier_frechet_distance(recon, ref, clf)
    per_train = [float(np.mean([cells[f"t{t}_s{s}"] for s in range(cfg["n_sample_seeds"])]))
                 for t in range(cfg["n_train_seeds"])]
    fdg = float(np.mean(list(cells.values())))
    out = {"key": key, "fd_gen": fdg, "cells": cells, "fd_gen_per_train_seed": per_train,
           "fd_gen_train_seed_sd": float(np.std(per_train, ddof=1)) if len(per_train) > 1 else None,
           "fd_gen_sampling_sd": float(np.mean([np.std([cells[f"t{t}_s{s}"] for s in range(cfg["n_sample_seeds"])],
                                                       ddof=1) for t in range(cfg["n_train_seeds"])]))
           if cfg["n_sample_seeds"] > 1 else None,
           "fd_recon": fd_rec, "gap": fdg - fd_rec, "recon_mse": float((recon - xrec).pow(2).mean()),
           "flow_cpu_s_per_seed": float(np.mean(flow_cpu)), "eval_cpu_s": eval_cpu,
           "generator": "conv flow" if zn.ndim == 4 and kind == "auto" else "MLP flow",
           "latent_shape": list(zn.shape[1:]),
           "cheap_reference": {"fd_gen": ref_fd, "gap": ref_fd - fd_rec, "steps": ref_steps, "cpu_s": rcpu}}
    atomic_write_json(f, out)
    return out


# ============================================================================================ diagnostics

def diagnose_one(name, enc, dec, xd, yd, clf, cfg, seed, cache: Path) -> Dict[str, Any]:
    """``diagnose(fisher=False)`` with the zoo's classifier features and the labels; cached."""
    from latentgeo.fisher.diagnosis import diagnose

    f = cache / name / "diag.json"
    key = {"n": int(xd.shape[0]), "n_generation": cfg["n_generation"], "n_penalty": cfg["n_penalty"],
           "version": 19}
    if f.exists():
        old = json.loads(f.read_text())
        if old.get("key") == key:
            return old
    c0 = time.process_time()
    s = diagnose({name: enc}, xd, decoders={name: dec}, fisher=False, labels=yd, n_penalty=cfg["n_penalty"],
                 n_geometry=cfg["n_geometry"], n_equivariance=cfg["n_equivariance"], seed=seed,
                 n_generation=cfg["n_generation"], feature_fn=clf.features,
                 feature_name="the zoo's classifier (the ground truth's feature space)")
    res = {"key": key, "entry": s["encoders"][name], "cpu_s": time.process_time() - c0}
    atomic_write_json(f, res)
    return res


# ============================================================================================ analysis

def score_of(rows: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> Dict[str, Optional[float]]:
    """The fixed score over ``names``: minus the mean rank position of :data:`SCORE_MEASURES` (each oriented so that
    a larger value is worse); higher = predicted better (smaller FD(gen)). Missing measures are left out."""
    out: Dict[str, Optional[float]] = {}
    cols = {m: np.array([rows[n].get(m, float("nan")) * s for n in names], dtype=float) for m, s in SCORE_MEASURES}
    for i, n in enumerate(names):
        pos = [rank_position(v[i], v) for v in cols.values() if np.isfinite(v[i]) and np.isfinite(v).sum() >= 2]
        out[n] = -float(np.mean(pos)) if pos else None
    return out


def leave_one_family_out(table, target, families, k=3, min_items: int = 6) -> Dict[str, Any]:
    """Top-k measures by |Spearman| chosen on the other families, with signs; the held-out family's items scored by
    the mean signed rank position within the held-out family; Spearman within the held-out family."""
    y = np.asarray(target, float)
    fams = np.asarray(families)
    names = sorted(table)
    cols = {nm: np.asarray(table[nm], float) for nm in names}
    res = {}
    for fam in sorted(set(families)):
        te, tr = fams == fam, fams != fam
        top = top_signed(cols, y, tr, lambda x: np.isfinite(x[tr]).sum() >= min_items
                         and bool(np.isfinite(x[te]).all()), k)
        ti = np.nonzero(te)[0]
        # within-family ranks of the chosen measures (only their choice and signs come from the other families;
        # ranks against the training families' values would collapse when a family's range lies outside theirs)
        pred = [float(np.mean([s * rank_position(cols[nm][i], cols[nm][ti]) for _, nm, s in top]))
                for i in ti] if top else []
        res[fam] = {"chosen": [(nm, s) for _, nm, s in top],
                    "spearman": spearman(pred, y[te]) if top else None}
    vals = [v["spearman"] for v in res.values() if v["spearman"] is not None]
    return {"per_family": res, "mean": float(np.mean(vals)) if vals else None}


def analyse(names, truth, diags, records, cfg, seed) -> Dict[str, Any]:
    fams = [records[n]["family"] for n in names]
    fdg = [truth[n]["fd_gen"] for n in names]
    gap = [truth[n]["gap"] for n in names]
    keys = sorted({k for n in names for k in diags[n] if not k.endswith("_se")})  # SEs are not diagnostics
    table = {k: [diags[n].get(k, float("nan")) for n in names] for k in keys}
    table = {k: v for k, v in table.items() if np.isfinite(v).sum() >= 5 and np.nanstd(v) > 0}
    nb = cfg["n_boot"]
    corr = {}
    for k, v in table.items():
        b = bootstrap_spearman(v, fdg, nb, seed)
        bg = bootstrap_spearman(v, gap, nb, seed)
        within = {}
        for fam in sorted(set(fams)):
            idx = [i for i, f in enumerate(fams) if f == fam]
            within[fam] = spearman([v[i] for i in idx], [fdg[i] for i in idx])
        corr[k] = {"vs_fd_gen": {x: b[x] for x in ("rho", "lo", "hi")}, "vs_gap": {x: bg[x] for x in ("rho", "lo", "hi")},
                   "within_family_vs_fd_gen": within, "n": b["n"]}
    sc = score_of({n: diags[n] for n in names}, names)
    scv = [float("nan") if sc[n] is None else -sc[n] for n in names]  # higher = predicted worse
    b = bootstrap_spearman(scv, fdg, nb, seed)
    bgap = bootstrap_spearman(scv, gap, nb, seed)
    within = {}
    for fam in sorted(set(fams)):
        idx = [i for i, f in enumerate(fams) if f == fam]
        bw = bootstrap_spearman([scv[i] for i in idx], [fdg[i] for i in idx], nb, seed)
        within[fam] = {x: bw[x] for x in ("rho", "lo", "hi", "n")}
    wv = [w["rho"] for w in within.values() if w["rho"] is not None]
    lofo = leave_one_family_out(table, fdg, fams)
    ranked = sorted(corr, key=lambda k: -abs(corr[k]["vs_fd_gen"]["rho"] or 0))
    return {"correlations": corr, "best_by_abs_rho_vs_fd_gen": ranked[:20],
            "score": {"measures": [list(m) for m in SCORE_MEASURES], "value": sc,
                      "recipe": "minus the mean rank position of the named measures (oriented so that larger = "
                                "worse), fixed in the code before any ground truth was read; no fitted weights",
                      "pooled_vs_fd_gen": {x: b[x] for x in ("rho", "lo", "hi")},
                      "pooled_vs_gap": {x: bgap[x] for x in ("rho", "lo", "hi")},
                      "within_family_vs_fd_gen": within,
                      "held_out_family_mean_vs_fd_gen": float(np.mean(wv)) if wv else None,
                      "note": "rho > 0 means the score's predicted badness rises with FD(gen) (what a good score "
                              "does); held-out = within each family, since the recipe is not fitted"},
            "leave_one_family_out_top3": lofo}


def seed_ceiling(names, truth) -> Dict[str, Any]:
    n_t = len(truth[names[0]]["fd_gen_per_train_seed"])
    pairs = []
    for i in range(n_t):
        for j in range(i + 1, n_t):
            r = spearman([truth[n]["fd_gen_per_train_seed"][i] for n in names],
                         [truth[n]["fd_gen_per_train_seed"][j] for n in names])
            if r is not None:
                pairs.append(r)
    r1 = float(np.mean(pairs)) if pairs else None
    # Spearman-Brown: reliability of the mean of n_t seeds; a perfect predictor correlates with that mean at most
    # sqrt(reliability)
    rel = n_t * r1 / (1 + (n_t - 1) * r1) if r1 is not None and r1 > 0 else None
    return {"single_seed_pairwise_spearman": r1, "pairs": pairs, "n_train_seeds": n_t,
            "mean_of_seeds_reliability": rel, "max_rho_vs_mean_truth": math.sqrt(rel) if rel else None,
            "note": "two ground truths from independent training seeds (each the mean over the sampling seeds) agree "
                    "with this Spearman: no diagnostic can be trusted beyond it; the analysis' target averages all "
                    "training seeds, whose reliability follows Spearman-Brown"}


def controls(names, truth, diags, score: Optional[Mapping[str, Optional[float]]] = None) -> Dict[str, Any]:
    """Family B against its base: rotation should not change FD(gen); cond 30 and the checkerboard should raise it.
    For each control: the FD(gen) change against twice its training-seed standard error, the score's change and
    verdict (a score measure moved beyond 2 SE and the score moved the same way), and which measures moved beyond
    twice their combined standard error (the ones that explain the control)."""
    out = {}
    for base in B_BASES:
        if base not in names:
            continue
        t0 = truth[base]
        noise = 2 * (t0.get("fd_gen_train_seed_sd") or 0.0) / math.sqrt(len(t0["fd_gen_per_train_seed"]))
        row = {}
        for kind in B_TRANSFORMS:
            n = f"b_{base}_{kind}"
            if n not in names:
                continue
            d = truth[n]["fd_gen"] - t0["fd_gen"]
            se_n = (truth[n].get("fd_gen_train_seed_sd") or 0.0) / math.sqrt(len(truth[n]["fd_gen_per_train_seed"]))
            lim = 2 * math.hypot(se_n, noise / 2)
            moved, zs = {}, {}
            for m, v in diags[n].items():
                if m.endswith("_se") or m not in diags[base]:
                    continue
                se = math.hypot(diags[n].get(m + "_se") or 0.0, diags[base].get(m + "_se") or 0.0)
                dv = v - diags[base][m]
                if se > 0 and abs(dv) > 2 * se:
                    moved[m], zs[m] = dv, abs(dv) / se
            sm = {m: moved[m] * sgn for m, sgn in SCORE_MEASURES if m in moved}  # > 0: the measure says worse
            sc_ch = (score[n] - score[base]) if score and score.get(n) is not None and score.get(base) is not None \
                else None
            row[kind] = {"fd_gen_change": d, "fd_gen_noise_2se": lim,
                         "fd_gen_verdict": "worse" if d > lim else "better" if d < -lim else "within noise",
                         "score_change": sc_ch,
                         "score_verdict": ("worse" if any(v > 0 for v in sm.values()) and sc_ch is not None
                                           and sc_ch < 0 else "better" if any(v < 0 for v in sm.values())
                                           and sc_ch is not None and sc_ch > 0 else "within noise"),
                         "score_measures_moved_2se": sm,
                         "measures_moved_2se": {m: moved[m] for m in sorted(moved, key=lambda m: -zs[m])[:12]},
                         "measures_moved_z": {m: zs[m] for m in sorted(moved, key=lambda m: -zs[m])[:12]}}
        out[base] = row
    return out


def _plot(names, truth, records, analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = analysis["best_by_abs_rho_vs_fd_gen"][:3]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    cols = {"A": "tab:blue", "B": "tab:orange", "C": "tab:green"}
    fdg = [truth[n]["fd_gen"] for n in names]
    sc = analysis["score"]["value"]
    panels = [("score (fixed recipe)", [-(sc[n]) if sc[n] is not None else np.nan for n in names])]
    panels += [(k, [analysis["_table"][k][i] for i in range(len(names))]) for k in best]
    for ax, (title, xs) in zip(axes, panels):
        ax.scatter(xs, fdg, c=[cols[records[n]["family"]] for n in names], s=14)
        rho = spearman(xs, fdg)
        ax.set_title(f"{title}\nSpearman {rho if rho is None else round(rho, 2)}", fontsize=7)
        ax.set_ylabel("FD(gen)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


#: measures whose zoo correlations go into the package data (diagnose's report shows them beside each measure)
PACKAGE_MEASURES = (
    "interpolation.alpha_0.5.fd", "interpolation.alpha_0.5.fd_minus_recon", "interpolation.alpha_0.5.precision",
    "interpolation.alpha_0.5.recall", "interpolation.alpha_0.25.fd", "interpolation.alpha_0.25.fd_minus_recon",
    "interpolation.fd_recon", "noise_sensitivity.s_0.1.fd_minus_recon", "noise_sensitivity.s_0.3.fd_minus_recon",
    "class_structure.viv", "class_structure.viv_per_dim", "class_structure.lnc", "reconstruction.mse",
    "reconstruction.psnr", "reconstruction.ssim", "tangential.anisotropy", "tangential.distortion",
    "curvature_at_scale.relative_curvature", "neighbourhood.trustworthiness", "neighbourhood.continuity",
    "neighbourhood.knn_overlap", "neighbourhood.distance_spearman", "spectrum.divergence",
    "equivariance.scale.error", "equivariance.hflip.error", "equivariance.rot90.error",
    "spectrum.paired_divergence", "latent_stats.effective_dim", "latent_manifold_curvature.ratio_to_data",
    "latent_dim", "score")


def package_data(result: Dict[str, Any]) -> Dict[str, Any]:
    corr = result["analysis"]["correlations"]
    out = {"source": "benchmarks/diffusability_zoo.py (benchmarks/results/diffusability_zoo.json)",
           "target": "FD(gen): classifier Frechet distance of flow-matching samples, mean over training x sampling "
                     "seeds", "scale": result.get("scale_note"), "validation": result.get("validation"),
           "measures": {}}
    for m in PACKAGE_MEASURES:
        c = corr.get(m)
        if c is None:
            continue
        rho, lo, hi = c["vs_fd_gen"]["rho"], c["vs_fd_gen"]["lo"], c["vs_fd_gen"]["hi"]
        wf = [v for v in c["within_family_vs_fd_gen"].values() if v is not None]
        pooled = lo is not None and (lo > 0 or hi < 0)
        sgn = 1.0 if (rho or 0) >= 0 else -1.0
        within = bool(wf) and all(v * sgn >= 0.3 for v in wf)
        within_any = bool(wf) and (all(v >= 0.3 for v in wf) or all(v <= -0.3 for v in wf))
        trust = ("predictive (pooled and within every family)" if pooled and within else
                 "between families only (confounded: not within them)" if pooled else
                 "within families only" if within_any else "no evidence")
        out["measures"][m] = {"spearman_fd_gen": rho, "ci95": [lo, hi], "within_family": c["within_family_vs_fd_gen"],
                              "n": c["n"], "reading": trust}
    ctl = {}
    for base, row in (result.get("controls") or {}).items():
        for kind, v in row.items():
            c = ctl.setdefault(kind, {"fd_gen_verdict": [], "score_verdict": [], "explained_by": []})
            c["fd_gen_verdict"].append(v["fd_gen_verdict"])
            c["score_verdict"].append(v["score_verdict"])
            for m in list(v["measures_moved_2se"])[:3]:
                if m not in c["explained_by"]:
                    c["explained_by"].append(m)
    out["controls"] = ctl
    return out


def mlp_generator_analysis(done, models, truth, diags, records, xtr, ref, xrec, clf, cfg, seed, cache, log):
    """The spatial encoders (families A, B) under a second generator, the MLP flow on the flattened latent: its
    FD(gen), its agreement with the conv flow's, the measures' Spearman against it, and the B controls under it
    (an MLP is blind to the spatial layout, so the checkerboard and the permutation should not matter to it)."""
    sp = [n for n in done if records[n]["family"] in ("A", "B")]
    tm = {}
    for n in sp:
        enc, dec, _ = models[n]
        tm[n] = ground_truth(n, enc, dec, xtr, ref, xrec, clf, cfg, seed, cache, kind="mlp")
        log(n, f"MLP-flow FD(gen) {tm[n]['fd_gen']:.2f} (conv flow {truth[n]['fd_gen']:.2f})")
    fm = [tm[n]["fd_gen"] for n in sp]
    fc = [truth[n]["fd_gen"] for n in sp]
    agree = bootstrap_spearman(fm, fc, cfg["n_boot"], seed)
    corr = {}
    keys = sorted({k for n in sp for k in diags[n] if not k.endswith("_se")})
    for k in keys:
        v = [diags[n].get(k, float("nan")) for n in sp]
        if np.isfinite(v).sum() >= 5 and np.nanstd(v) > 0:
            b = bootstrap_spearman(v, fm, cfg["n_boot"], seed)
            corr[k] = {x: b[x] for x in ("rho", "lo", "hi")}
    sc = score_of({n: diags[n] for n in sp}, sp)
    b = bootstrap_spearman([-sc[n] if sc[n] is not None else float("nan") for n in sp], fm, cfg["n_boot"], seed)
    ctl = controls(sp, tm, diags, sc)
    ceil = seed_ceiling(sp, tm)
    return {"encoders": sp, "fd_gen": {n: tm[n]["fd_gen"] for n in sp},
            "fd_gen_train_seed_sd": {n: tm[n]["fd_gen_train_seed_sd"] for n in sp},
            "spearman_mlp_vs_conv_fd_gen": {x: agree[x] for x in ("rho", "lo", "hi")},
            "seed_ceiling_spearman": ceil["single_seed_pairwise_spearman"],
            "score_spearman_fd_gen": {x: b[x] for x in ("rho", "lo", "hi")},
            "correlations_vs_fd_gen": corr,
            "controls": {base: {k: {kk: v[kk] for kk in ("fd_gen_change", "fd_gen_noise_2se", "fd_gen_verdict",
                                                         "score_verdict")} for k, v in row.items()}
                         for base, row in ctl.items()},
            "generator_cpu_s_per_seed": float(np.mean([tm[n]["flow_cpu_s_per_seed"] for n in sp]))}


# ============================================================================================ main

def main(argv=None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--cache", default=None, help="cache folder (default runs/zoo19, quick: runs/zoo19_quick)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/diffusability_zoo.json)")
    ap.add_argument("--encoders", default=None, help="comma-separated subset of the zoo (default: all)")
    ap.add_argument("--package-data", action="store_true",
                    help="also write latentgeo/fisher/zoo_validation.json (the report's correlations)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mlp-truth", action="store_true",
                    help="also the MLP flow on the flattened spatial latents (families A, B): a second generator")
    a = ap.parse_args(argv)
    cfg = dict(PRESETS["quick" if a.quick else "full"])
    allnames = zoo_names()
    names = [n.strip() for n in a.encoders.split(",")] if a.encoders else allnames
    bad = [n for n in names if n not in allnames]
    if bad:
        raise LatentgeoError(f"unknown encoder '{bad[0]}'; choose from: {', '.join(allnames)}")
    if len(names) < 5:
        raise LatentgeoError("the analysis needs at least 5 encoders; pass more to --encoders")
    from latentgeo.runfolder import check_output_dir

    cache = Path(a.cache) if a.cache else ROOT / "runs" / ("zoo19_quick" if a.quick else "zoo19")
    check_output_dir(cache, "--cache")
    out = Path(a.out) if a.out else (cache / "diffusability_zoo_quick.json" if a.quick else
                                     ROOT / "benchmarks" / "results" / "diffusability_zoo.json")
    check_output_dir(out.parent, "--out folder")
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    t_cpu0, t_wall0 = time.process_time(), time.perf_counter()
    log = lambda *s: print(f"[zoo {time.strftime('%H:%M:%S')}]", *s, flush=True)  # noqa: E731
    from latentgeo import data as ld
    from latentgeo.metrics import classifier_frechet_distance, load_or_fit_classifier

    xtr, ytr = ld.fashion_mnist(split="train", n=cfg["n_train"], return_labels=True)
    xte, yte = ld.fashion_mnist(split="test", n=cfg["n_test"], return_labels=True)
    half = cfg["n_test"] // 2
    ref, xrec = xte[:half], xte[half:]
    clf, cinfo = load_or_fit_classifier(cache, xtr, ytr, steps=cfg["clf_steps"], seed=a.seed)
    for p in clf.parameters():
        p.requires_grad_(False)
    floor = classifier_frechet_distance(xrec, ref, clf)
    log(f"classifier val accuracy {cinfo.get('val_accuracy'):.3f}, real-vs-real FD floor {floor:.2f}")
    models = build_all(names, xtr, ytr, cfg, a.seed, cache, clf, log)
    result: Dict[str, Any] = {
        "benchmark": "diffusability_zoo (issue 19 redesign)", "preset": "quick" if a.quick else "full",
        "settings": cfg, "seed": a.seed, "encoders": names,
        "families": {n: models[n][2]["family"] for n in names},
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "torch": torch.__version__, "threads": a.threads, "load_average_at_start": list(os.getloadavg()),
        "scale_note": ("REDUCED-SCALE run: " if not a.quick else "SMOKE run: ") +
                      f"{cfg['n_train']} training images, autoencoders {cfg['ae_steps']} steps, generators "
                      f"{cfg['flow_steps']} steps (conv width {cfg['flow_width']}), {cfg['n_gen']} samples per FD, "
                      f"{cfg['n_train_seeds']} training x {cfg['n_sample_seeds']} sampling seeds, on one shared CPU "
                      "thread; the numbers rank tiny models and say nothing about large tokenizers by themselves",
        "score_measures_fixed_before_ground_truth": [list(m) for m in SCORE_MEASURES],
        "classifier": {"val_accuracy": cinfo.get("val_accuracy")}, "fd_real_floor": floor,
        "status": "running",
    }
    truth, diags, table, records = {}, {}, {}, {}
    xd, yd = xte, yte
    for n in names:
        enc, dec, rec = models[n]
        records[n] = rec
        truth[n] = ground_truth(n, enc, dec, xtr, ref, xrec, clf, cfg, a.seed, cache)
        dg = diagnose_one(n, enc, dec, xd, yd, clf, cfg, a.seed, cache)
        flat = flatten_numeric(dg["entry"])
        diags[n] = {k: v for k, v in flat.items() if is_diagnostic(k) or k.endswith("_se")}
        table[n] = {"family": rec["family"], "options": rec["options"], "train_cpu_s": rec["train_cpu_s"],
                    "truth": truth[n], "diagnose_cpu_s": dg["cpu_s"], "timing_s": dg["entry"].get("timing_s"),
                    "diagnostics": {k: v for k, v in diags[n].items() if not k.endswith("_se")}}
        log(n, f"FD(gen) {truth[n]['fd_gen']:.2f} (train-seed sd {truth[n]['fd_gen_train_seed_sd'] or 0:.2f})  "
               f"FD(recon) {truth[n]['fd_recon']:.2f}  flow {truth[n]['flow_cpu_s_per_seed']:.1f}s/seed  "
               f"diagnose {dg['cpu_s']:.1f}s")
        result["table"] = table
        result["cpu_seconds_this_process"] = time.process_time() - t_cpu0
        atomic_write_json(out, result)  # partial results as they come
    done = list(table)
    analysis = analyse(done, truth, diags, records, cfg, a.seed)
    ceil = seed_ceiling(done, truth)
    ctl = controls(done, truth, diags, analysis["score"]["value"])
    flow_cpu = float(np.mean([truth[n]["flow_cpu_s_per_seed"] for n in done]))
    diag_cpu = float(np.mean([table[n]["diagnose_cpu_s"] for n in done]))
    gen_cpu = float(np.mean([(table[n]["timing_s"] or {}).get("generation", 0.0)
                             + (table[n]["timing_s"] or {}).get("class_structure", 0.0) for n in done]))
    ref_rho = spearman([truth[n]["cheap_reference"]["fd_gen"] for n in done], [truth[n]["fd_gen"] for n in done])
    sc = analysis["score"]
    fams = sorted({records[n]["family"] for n in done})
    result.update({
        "status": "complete",
        "analysis": analysis, "seed_ceiling": ceil, "controls": ctl,
        "cheap_reference": {"spearman_fd_gen": ref_rho,
                            "cpu_ratio_to_one_generator": float(np.mean([truth[n]["cheap_reference"]["cpu_s"]
                                                                          for n in done])) / flow_cpu,
                            "note": "the same generator trained for a tenth of the steps: a reference, not a "
                                    "diagnostic"},
        "cost": {"generator_train_cpu_s_mean": flow_cpu, "diagnose_cpu_s_mean": diag_cpu,
                 "score_measures_cpu_s_mean": gen_cpu,
                 "note": "per encoder, process CPU seconds on one thread; the score's measures (generation + class "
                         "structure parts of diagnose) against training ONE ground-truth generator"},
        "validation": {
            "n_encoders": len(done), "n_families": len(fams),
            "seed_ceiling_spearman": ceil["single_seed_pairwise_spearman"],
            "seed_ceiling_vs_mean_truth": ceil["max_rho_vs_mean_truth"],
            "held_out_family_spearman_fd_gen": sc["held_out_family_mean_vs_fd_gen"],
            "held_out_family_spearman_per_family": {f: sc["within_family_vs_fd_gen"][f]["rho"] for f in fams},
            "pooled_spearman_fd_gen": sc["pooled_vs_fd_gen"]["rho"],
            "pooled_spearman_fd_gen_ci95": [sc["pooled_vs_fd_gen"]["lo"], sc["pooled_vs_fd_gen"]["hi"]],
            "leave_one_family_out_top3_mean": analysis["leave_one_family_out_top3"]["mean"],
            "diagnose_cost_ratio": gen_cpu / flow_cpu,
            "diagnose_cost_ratio_all_cheap_measures": diag_cpu / flow_cpu,
            "cheap_reference_spearman_fd_gen": ref_rho,
            "score": "rank average of " + ", ".join(m for m, _ in SCORE_MEASURES)},
    })
    if a.mlp_truth:
        result["mlp_generator"] = mlp_generator_analysis(done, models, truth, diags, records, xtr, ref, xrec, clf,
                                                          cfg, a.seed, cache, log)
        atomic_write_json(out, result)
    analysis["_table"] = {k: [diags[n].get(k, float("nan")) for n in done] for k in analysis["best_by_abs_rho_vs_fd_gen"]}
    try:
        _plot(done, truth, records, analysis, out.with_suffix(".png"))
    finally:
        analysis.pop("_table", None)
    result["cpu_seconds_this_process"] = time.process_time() - t_cpu0
    result["wall_seconds_this_process"] = time.perf_counter() - t_wall0
    result["cpu_seconds_total_cached"] = float(sum(
        table[n]["train_cpu_s"] + truth[n]["flow_cpu_s_per_seed"] * cfg["n_train_seeds"] + truth[n]["eval_cpu_s"]
        + truth[n]["cheap_reference"]["cpu_s"] + table[n]["diagnose_cpu_s"] for n in done))
    atomic_write_json(out, result)
    if a.package_data:
        atomic_write_json(ROOT / "latentgeo" / "fisher" / "zoo_validation.json", package_data(result))
    log("wrote", out)
    log(json.dumps(result["validation"]))
    return result


if __name__ == "__main__":
    try:
        main()
    except LatentgeoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
