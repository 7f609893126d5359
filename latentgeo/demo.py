"""``latentgeo demo``: the whole toolkit end to end on a small image set, with an HTML report.

Stages (each timed, each calling the public functions of its area):

1. data + the feature classifier used by the image metrics (:mod:`latentgeo.metrics`);
2. a geometry-preserving encoder/decoder (GPE: encoder on the GME cost, then decoder) and
3. a beta-VAE with the same architecture and the same number of optimiser steps (:mod:`latentgeo.autoencoders`);
4. geometry of both latent spaces on held-out images (distance correlation, distortion, neighbours);
5. EDM denoisers on pixels and on the normalised latents (:mod:`latentgeo.diffusion`);
6. Fisher information curves and the FIR deviation ``D_R`` of each latent space (:mod:`latentgeo.fisher`);
7. a spacetime geodesic and the Diffusion Edit Distance between test images (:mod:`latentgeo.spacetime`);
8. generation: flow matching in each latent space, decoded, and pixel-space diffusion, scored with the classifier
   Frechet distance, sliced Wasserstein and MMD against held-out images (:mod:`latentgeo.flows`);

then ``<out>/report.html`` (self-contained) and ``<out>/summary.json``. A stage whose capability is missing in
this version is marked "not available" instead of failing the run; a stage that raises is recorded as an error
with its message, and the rest of the demo still runs.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch

from latentgeo.checkpoint import atomic_write_json
from latentgeo.errors import LatentgeoError, check_choice

__all__ = ["run_demo", "PRESETS", "STAGES"]

# Step counts per preset. "full" is sized for < 10 minutes on 2 CPU cores with digits; "quick" is a smoke run.
PRESETS: Dict[str, Dict[str, Any]] = {
    "full": dict(clf_steps=500, latent_dim=12, enc_steps=1500, dec_steps=1500, ae_batch=128, den_steps=3000,
                 lat_den_steps=2000, den_batch=256, fisher_n=256, fisher_sigmas=14, fisher_probes=4,
                 geo_points=16, geo_nodes=6, geo_steps=150, flow_steps=3000, n_gen=600, sample_steps=24,
                 flow_ode_steps=32, n_train_fashion=10000),
    "quick": dict(clf_steps=60, latent_dim=8, enc_steps=60, dec_steps=60, ae_batch=64, den_steps=80,
                  lat_den_steps=60, den_batch=128, fisher_n=48, fisher_sigmas=6, fisher_probes=2,
                  geo_points=8, geo_nodes=3, geo_steps=8, flow_steps=80, n_gen=120, sample_steps=8,
                  flow_ode_steps=8, n_train_fashion=2000),
}

STAGES = ["data", "gpe", "vae", "geometry", "diffusion", "fisher", "spacetime", "generation"]
STAGE_TITLES = {
    "data": "Data and feature classifier",
    "gpe": "Geometry-preserving encoder (GPE)",
    "vae": "VAE baseline",
    "geometry": "Latent geometry",
    "diffusion": "Diffusion models in pixel and latent space",
    "fisher": "Fisher diagnostics: how diffusable is each latent space?",
    "spacetime": "Spacetime geodesic and Diffusion Edit Distance",
    "generation": "Latent generation and image-quality metrics",
}


class _Unavailable(Exception):
    """A capability this stage needs is not in this version of latentgeo."""


# Where a public name may live while an area is still exporting it from its package __init__.
_FALLBACK_MODULES = {"latentgeo.autoencoders": ["latentgeo.autoencoders.nets", "latentgeo.autoencoders.losses"]}


def _need(module: str, *names: str):
    """Import ``module`` and return the named attributes, or raise :class:`_Unavailable`."""
    mods = []
    for m in [module] + _FALLBACK_MODULES.get(module, []):
        try:
            mods.append(importlib.import_module(m))
        except ImportError:
            pass
    if not mods:
        raise _Unavailable(f"{module} is not available")
    out = []
    for n in names:
        hit = next((getattr(m, n) for m in mods if hasattr(m, n)), None)
        if hit is None:
            raise _Unavailable(f"{module}.{n} is not available in this version")
        out.append(hit)
    return out[0] if len(out) == 1 else out


def _has(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------------ small helpers

def _console():
    from rich.console import Console

    return Console(highlight=False)


def _fig_grid(images: torch.Tensor, title: str, nrow: int = 10):
    """A matplotlib figure showing ``images`` [N, C, H, W] in [-1, 1] as a grid."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = images.detach().float().clamp(-1, 1).cpu()
    n = x.shape[0]
    ncol = min(nrow, n)
    nr = math.ceil(n / ncol)
    c, h, w = x.shape[1:]
    canvas = -torch.ones(c, nr * (h + 1) + 1, ncol * (w + 1) + 1)  # background-coloured gaps
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[i]
    img = ((canvas + 1) / 2).permute(1, 2, 0).numpy()
    fig, ax = plt.subplots(figsize=(min(0.55 * ncol, 9), min(0.55 * nr, 9) + 0.4))
    ax.imshow(img[..., 0] if c == 1 else img, cmap="gray_r" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def _batched(fn: Callable, x: torch.Tensor, bs: int = 512) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def _pairwise(a: torch.Tensor) -> torch.Tensor:
    a = a.reshape(a.shape[0], -1).double()
    return torch.cdist(a, a)


def _geometry(encode: Callable, x: torch.Tensor, k: int = 10) -> Dict[str, float]:
    """Held-out geometry of an encoder: Spearman correlation of pairwise distances, spread of the distance ratio
    ``d_Z / d_X`` (q95/q5, scale-free: 1 for a similarity), the GME cost and the k-NN overlap."""
    from scipy.stats import spearmanr

    z = _batched(encode, x).double()
    dx, dz = _pairwise(x), _pairwise(z)
    iu = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    a, b = dx[iu[0], iu[1]], dz[iu[0], iu[1]]
    keep = a > 0
    ratio = (b[keep] / a[keep]).numpy()
    q05, q50, q95 = np.quantile(ratio, [0.05, 0.5, 0.95])
    rho = float(spearmanr(a.numpy(), b.numpy()).correlation)
    r = torch.log1p(b ** 2) - torch.log1p(a ** 2)
    nx = dx.clone().fill_diagonal_(float("inf")).topk(k, largest=False).indices
    nz = dz.clone().fill_diagonal_(float("inf")).topk(k, largest=False).indices
    overlap = float(np.mean([len(set(nx[i].tolist()) & set(nz[i].tolist())) / k for i in range(x.shape[0])]))
    return {"spearman": rho, "ratio_q05": float(q05), "ratio_q50": float(q50), "ratio_q95": float(q95),
            "ratio_spread": float(q95 / q05), "gme": float(2 * r.pow(2).sum() / x.shape[0] ** 2),
            "knn_overlap": overlap, "_dx": a.numpy(), "_dz": b.numpy()}


# --------------------------------------------------------------------------------------------- autoencoder adapters
# The autoencoder area exposes the building blocks (Encoder, Decoder, gme_loss, kl_per_dim) and the generic
# training loop; these adapters assemble GPE and beta-VAE training from them, so that the demo does not depend on
# a particular high-level training function.

class _VAE(torch.nn.Module):
    def __init__(self, enc, dec):
        super().__init__()
        self.enc, self.dec = enc, dec


def _fit_gpe(x: torch.Tensor, d: int, enc_steps: int, dec_steps: int, batch: int, seed: int, progress: bool):
    Encoder, Decoder = _need("latentgeo.autoencoders", "Encoder", "Decoder")
    gme_loss = _need("latentgeo.autoencoders", "gme_loss")
    train_loop = _need("latentgeo.train", "train_loop")
    torch.manual_seed(seed)
    enc = Encoder(list(x.shape[1:]), d)
    res = train_loop(enc, lambda m, b, g: gme_loss(m.raw(b), b), x, steps=enc_steps, batch_size=batch, lr=1e-3,
                     seed=seed, ema_decay=None, grad_clip=None, progress=progress, device="cpu",
                     description="GPE encoder (GME)", log_every=max(1, enc_steps // 20))
    enc = res.model.eval()
    enc.fit_normalisation(x)
    for p in enc.parameters():
        p.requires_grad_(False)
    z = _batched(enc, x)  # the encoder is frozen: encode once, train the decoder on (z, x) pairs
    torch.manual_seed(seed + 1)
    dec = Decoder(list(x.shape[1:]), d)
    res_d = train_loop(dec, lambda m, b, g: (m(b[0]) - b[1]).pow(2).mean(), (z, x), steps=dec_steps,
                       batch_size=batch, lr=1e-3, seed=seed + 1, ema_decay=None, grad_clip=None, progress=progress,
                       device="cpu", description="GPE decoder (MSE)", log_every=max(1, dec_steps // 20))
    return enc, res_d.model.eval(), {"encoder_curve": res.metrics, "decoder_curve": res_d.metrics}


def _fit_vae(x: torch.Tensor, d: int, steps: int, batch: int, seed: int, progress: bool, beta: float = 0.1):
    Encoder, Decoder = _need("latentgeo.autoencoders", "Encoder", "Decoder")
    kl_per_dim = _need("latentgeo.autoencoders", "kl_per_dim")
    train_loop = _need("latentgeo.train", "train_loop")
    torch.manual_seed(seed)
    model = _VAE(Encoder(list(x.shape[1:]), d, variational=True), Decoder(list(x.shape[1:]), d))

    def loss(m, b, g):
        mean, logvar = m.enc.mean_logvar(b)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g, dtype=mean.dtype)
        rec = (m.dec.decode_raw(z) - b).pow(2).mean()
        kl = kl_per_dim(mean, logvar)
        return rec + beta * kl, {"mse": rec.detach(), "kl": kl.detach()}

    res = train_loop(model, loss, x, steps=steps, batch_size=batch, lr=1e-3, seed=seed, ema_decay=None,
                     grad_clip=None, progress=progress, device="cpu", description="beta-VAE (joint)",
                     log_every=max(1, steps // 20))
    m = res.model.eval()
    enc, dec = m.enc, m.dec
    m_, c_ = enc.fit_normalisation(x)
    # The decoder learnt on raw latents: tell it how to undo the normalisation.
    dec.in_shift.copy_(enc.shift)
    dec.in_scale.fill_(float(enc.scale))
    return enc, dec, {"curve": res.metrics}


def _fit_latent_flow(z: torch.Tensor, steps: int, batch: int, seed: int, progress: bool):
    """A generator of latents: flow matching when :mod:`latentgeo.flows` has it, else an EDM denoiser."""
    if _has("latentgeo.flows", "fit_flow"):
        fit_flow = _need("latentgeo.flows", "fit_flow")
        model = fit_flow(z, steps=steps, batch_size=batch, seed=seed, progress=progress)
        return "flow matching", model
    fit_denoiser = _need("latentgeo.diffusion", "fit_denoiser")
    den = fit_denoiser(z, net="mlp", steps=steps, batch_size=batch, seed=seed, progress=progress,
                       net_kwargs={"hidden": 256, "depth": 3})
    return "EDM (flow matching not available in this version)", den


def _sample_latents(kind: str, model, n: int, d: int, ode_steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "flow matching":
        sample_flow = _need("latentgeo.flows", "sample_flow")
        return sample_flow(model, n, steps=ode_steps, generator=g)
    sample = _need("latentgeo.diffusion", "sample")
    return sample(model, (n, d), n_steps=ode_steps, generator=g)


# ---------------------------------------------------------------------------------------------------- stages

def _stage_data(ctx):
    from latentgeo import data as ld
    from latentgeo.metrics import load_or_fit_classifier

    P, name = ctx.p, ctx.data
    if name == "digits":
        xtr, ytr = ld.digits(split="train", seed=ctx.seed, return_labels=True)
        xte, yte = ld.digits(split="test", seed=ctx.seed, return_labels=True)
    else:
        xtr, ytr = ld.fashion_mnist(split="train", n=P["n_train_fashion"], return_labels=True)
        xte, yte = ld.fashion_mnist(split="test", n=max(1000, P["n_gen"]), return_labels=True)
    ctx.x, ctx.y, ctx.xte, ctx.yte = xtr, ytr, xte, yte
    clf, info = load_or_fit_classifier(ctx.out, xtr, ytr, steps=P["clf_steps"], seed=ctx.seed)
    ctx.clf = clf
    from latentgeo.metrics import classifier_accuracy

    acc = classifier_accuracy(clf, xte, yte)
    ctx.res["data"] = {"dataset": name, "n_train": int(xtr.shape[0]), "n_test": int(xte.shape[0]),
                       "shape": list(xtr.shape[1:]), "classifier_test_accuracy": acc,
                       "classifier_cached": bool(info.get("cached", False))}
    rep = ctx.rep
    rep.text(f"{name}: {xtr.shape[0]} training and {xte.shape[0]} held-out images of shape "
             f"{'x'.join(map(str, xtr.shape[1:]))}, pixels scaled to [-1, 1].")
    rep.figure(_fig_grid(xte[:30], "held-out images"), "Held-out images (the reference for every metric below).")
    rep.text(f"A small CNN classifier was trained on the training labels ({P['clf_steps']} steps) and reaches "
             f"{acc:.1%} accuracy on the held-out images. Its 64-dimensional penultimate features replace Inception "
             "for the image-quality metric: the classifier Frechet distance (CFD) below is FID computed on these "
             "features. Values are comparable only within runs that use the same classifier file "
             "(classifier.safetensors in the run folder).")


def _stage_gpe(ctx):
    P = ctx.p
    enc, dec, curves = _fit_gpe(ctx.x, P["latent_dim"], P["enc_steps"], P["dec_steps"], P["ae_batch"], ctx.seed,
                                ctx.progress)
    ctx.models["gpe"] = (enc, dec)
    mse = float(((_batched(lambda b: dec(enc(b)), ctx.xte)) - ctx.xte).pow(2).mean())
    enc_curve = curves["encoder_curve"]
    ctx.res["gpe"] = {"latent_dim": P["latent_dim"], "encoder_steps": P["enc_steps"], "decoder_steps": P["dec_steps"],
                      "final_gme_train": enc_curve[-1]["loss"] if enc_curve else float("nan"),
                      "test_mse": mse, "curves": curves}
    ctx.rep.text(f"The GPE encoder (latent dimension {P['latent_dim']}) was trained ALONE for {P['enc_steps']} steps to "
                 "make latent distances match pixel distances (Gromov-Monge embedding cost), then frozen; a decoder "
                 f"was trained on it for {P['dec_steps']} steps. Held-out reconstruction MSE: {mse:.4f} "
                 "(pixels in [-1, 1]).")
    ctx.rep.figure(_fig_grid(torch.cat([ctx.xte[:10], _batched(lambda b: dec(enc(b)), ctx.xte[:10])]),
                             "top: held-out, bottom: GPE reconstruction"), "GPE reconstructions.")


def _stage_vae(ctx):
    P = ctx.p
    steps = P["enc_steps"] + P["dec_steps"]  # same number of optimiser steps as GPE's two stages together
    enc, dec, curves = _fit_vae(ctx.x, P["latent_dim"], steps, P["ae_batch"], ctx.seed, ctx.progress)
    ctx.models["vae"] = (enc, dec)
    mse = float((_batched(lambda b: dec(enc(b)), ctx.xte) - ctx.xte).pow(2).mean())
    ctx.res["vae"] = {"latent_dim": P["latent_dim"], "steps": steps, "beta": 0.1, "test_mse": mse,
                      "curves": curves}
    gpe = ctx.res.get("gpe", {}).get("test_mse")
    cmp = ""
    if gpe is not None:
        cmp = (f" GPE's is {gpe:.4f}: " + ("GPE reconstructs better at equal steps."
                                          if gpe < mse else "the VAE reconstructs better here."))
    ctx.rep.text(f"A beta-VAE (KL weight 0.1 per dimension) with the same encoder/decoder architecture was trained "
                 f"jointly for {steps} steps, as many as GPE's encoder and decoder stages together. Held-out "
                 f"reconstruction MSE (decoding the latent mean): {mse:.4f}.{cmp}")
    ctx.rep.figure(_fig_grid(torch.cat([ctx.xte[:10], _batched(lambda b: dec(enc(b)), ctx.xte[:10])]),
                             "top: held-out, bottom: VAE reconstruction"), "VAE reconstructions.")


def _stage_geometry(ctx):
    if not ctx.models:
        raise _Unavailable("no trained encoder (the autoencoder stages did not run)")
    n = min(300, ctx.xte.shape[0])
    x = ctx.xte[:n]
    rows, geo = [], {}
    plt = _plt()
    fig, axes = plt.subplots(1, len(ctx.models), figsize=(4.2 * len(ctx.models), 3.6), squeeze=False)
    for ax, (name, (enc, _)) in zip(axes[0], ctx.models.items()):
        g = _geometry(enc, x)
        dx, dz = g.pop("_dx"), g.pop("_dz")
        geo[name] = g
        rows.append([name.upper(), g["spearman"], g["knn_overlap"], g["ratio_spread"], g["gme"]])
        idx = np.random.default_rng(0).choice(dx.shape[0], min(3000, dx.shape[0]), replace=False)
        ax.scatter(dx[idx], dz[idx], s=2, alpha=0.4)
        ax.set(xlabel="pixel distance", ylabel="latent distance (normalised latents)",
               title=f"{name.upper()}: Spearman {g['spearman']:.3f}")
    ctx.res["geometry"] = geo
    ctx.rep.table(rows, header=["encoder", "Spearman of distances", "10-NN overlap", "ratio spread q95/q5",
                                "GME cost"], caption=f"Held-out geometry on {n} test images ({n*(n-1)//2} pairs)")
    ctx.rep.figure(fig, "Pairwise distances: pixels vs latents (held-out pairs).")
    txt = ("How faithfully does each latent space keep the distances between images? A Spearman correlation of 1 "
           "means the latent distances rank the pairs exactly as pixel distances do; the ratio spread is 1 for a "
           "perfect similarity (one global scale) and grows with distortion; the 10-NN overlap is the share of each "
           "image's nearest neighbours that stay neighbours.")
    if "gpe" in geo and "vae" in geo:
        a, b = geo["gpe"]["spearman"], geo["vae"]["spearman"]
        txt += (f"\n\nHere GPE scores {a:.3f} and the VAE {b:.3f}: " +
                ("the GPE latent space preserves the geometry better, as it was trained to." if a > b else
                 "the VAE preserves it at least as well in this run (short training budget)."))
    ctx.rep.text(txt)


def _stage_diffusion(ctx):
    fit_denoiser, sample = _need("latentgeo.diffusion", "fit_denoiser", "sample")
    P = ctx.p
    den = fit_denoiser(ctx.x, net="mlp", steps=P["den_steps"], batch_size=P["den_batch"], seed=ctx.seed,
                       progress=ctx.progress, net_kwargs={"hidden": 256, "depth": 3})
    ctx.denoisers["pixels"] = (den, None)
    rows = [["pixels", int(np.prod(ctx.x.shape[1:])), P["den_steps"], den.sigma_data]]
    for name, (enc, _) in ctx.models.items():
        z = _batched(enc, ctx.x)
        d_lat = fit_denoiser(z, net="mlp", steps=P["lat_den_steps"], batch_size=P["den_batch"], seed=ctx.seed,
                             progress=ctx.progress, net_kwargs={"hidden": 256, "depth": 3})
        ctx.denoisers[name] = (d_lat, z)
        rows.append([f"{name.upper()} latents", z.shape[1], P["lat_den_steps"], d_lat.sigma_data])
    g = torch.Generator().manual_seed(ctx.seed)
    xs = sample(den, (P["n_gen"],) + tuple(ctx.x.shape[1:]), n_steps=P["sample_steps"], generator=g)
    ctx.samples["pixel diffusion"] = xs.clamp(-1, 1)
    ctx.res["diffusion"] = {r[0]: {"dim": r[1], "steps": r[2], "sigma_data": r[3]} for r in rows}
    ctx.rep.text("EDM denoisers D(x, sigma) = E[x0 | x] (MLP, EDM preconditioning with sigma_data estimated from the "
                 "data) were trained on the pixels and on each encoder's normalised latents (E|z|^2 = d). "
                 "They are what the Fisher and spacetime analyses below probe.")
    ctx.rep.table(rows, header=["space", "dimension", "training steps", "sigma_data"])
    ctx.rep.figure(_fig_grid(xs[:30], f"pixel-space diffusion, Heun {P['sample_steps']} steps"),
                   "Samples of the pixel-space diffusion model.")


def _stage_fisher(ctx):
    fisher_curves, fir_deviation, default_sigmas = _need("latentgeo.fisher", "fisher_curves", "fir_deviation",
                                                         "default_sigmas")
    if "pixels" not in ctx.denoisers:
        raise _Unavailable("no trained denoisers (the diffusion stage did not run)")
    P = ctx.p
    sig = default_sigmas(P["fisher_sigmas"], 0.01, 80.0)
    n = min(P["fisher_n"], ctx.x.shape[0])
    curves = {}
    for name, (den, z) in ctx.denoisers.items():
        data = ctx.x[:n] if z is None else z[:n]
        g = torch.Generator().manual_seed(ctx.seed)
        curves[name] = fisher_curves(den, data, sig, n_probes=P["fisher_probes"], generator=g, label=name)
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    s = sig.numpy()
    for name, c in curves.items():
        axes[0].loglog(s, c.fi.numpy(), label=name)
        axes[1].loglog(s, (-c.fir).clamp_min(1e-12).numpy(), label=name)
    res = {"sigma": [float(v) for v in sig], "curves": {k: c.to_dict() for k, c in curves.items()}, "d_r": {}}
    rows = []
    for name in curves:
        if name == "pixels":
            continue
        dev = fir_deviation(curves["pixels"], curves[name])
        res["d_r"][name] = [float(v) for v in dev.d_r]
        axes[2].loglog(s, dev.d_r.clamp_min(1e-6).numpy(), label=f"{name.upper()} latents")
        small = float(dev.d_r[0])
        med = float(dev.d_r.median())
        rows.append([f"{name.upper()} latents", small, med])
    D = int(np.prod(ctx.x.shape[1:]))
    d = ctx.p["latent_dim"]
    axes[2].axhline((D - d) / (D - 2), color="gray", ls="--", lw=1, label="(D-d)/(D-2)")
    axes[0].set(xlabel="sigma", ylabel="Fisher information I")
    axes[1].set(xlabel="sigma", ylabel="-R = -dI/dtau")
    axes[2].set(xlabel="sigma", ylabel="D_R (FIR deviation)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ctx.res["fisher"] = res
    ctx.rep.figure(fig, "Fisher information, Fisher information rate and the FIR deviation D_R of each latent space "
                        "from pixel space, on a log grid of noise levels.")
    ctx.rep.table(rows, header=["latent space", f"D_R at sigma={float(sig[0]):.2g}", "median D_R over sigma"])
    txt = ("The Fisher information I(sigma) measures how sharply the noised data distribution is peaked; its rate "
           "R = dI/dtau measures how fast that changes as noise is added, which is what a diffusion model has to "
           "learn. D_R = |R_pixels - R_latent| / |R_pixels| compares the two spaces at each noise level: 0 means the "
           "latent space is, for a diffusion model, as easy (and as hard) as the pixel space; values near 1 mean the "
           f"encoder changed the problem a lot. Part of the deviation is unavoidable: going from D = {D} to d = {d} "
           f"dimensions alone gives about (D-d)/(D-2) = {(D - d) / (D - 2):.2f} at small noise (dashed line); "
           "the rest comes from how the encoder distorts and bends the data.")
    if len(rows) == 2:
        a, b = rows[0], rows[1]
        lo = a if a[2] < b[2] else b
        txt += (f"\n\nIn this run the {lo[0]} deviate less from pixel space over the noise range (median D_R "
                f"{lo[2]:.2f} vs {(b if lo is a else a)[2]:.2f}).")
    ctx.rep.text(txt)


def _stage_spacetime(ctx):
    geodesic = _need("latentgeo.spacetime", "geodesic")
    if "pixels" not in ctx.denoisers:
        raise _Unavailable("no trained pixel denoiser (the diffusion stage did not run)")
    den = ctx.denoisers["pixels"][0]
    P = ctx.p
    xte, yte = ctx.xte, ctx.yte
    # Pairs: two images of the same class, and the first with an image of another class.
    i0 = 0
    same = int(next(j for j in range(1, len(yte)) if yte[j] == yte[i0]))
    other = int(next(j for j in range(1, len(yte)) if yte[j] != yte[i0]))
    a = torch.stack([xte[i0], xte[i0], xte[i0]]).double()
    b = torch.stack([xte[same], xte[other], xte[i0]]).double()
    sigma_min = 0.1
    den64 = _as_double(den)
    use_ed = _has("latentgeo.spacetime", "edit_distance")
    g = torch.Generator().manual_seed(ctx.seed)
    geo = geodesic(den64, (a[:2], sigma_min), (b[:2], sigma_min), n_points=P["geo_points"], n_nodes=P["geo_nodes"],
                   steps=P["geo_steps"], lr=0.1, n_probes=1, generator=g, batched=True, progress=ctx.progress,
                   eval_probes=8)
    lengths = [float(v) for v in torch.as_tensor(geo.length).reshape(-1)]
    if use_ed:
        edit_distance = _need("latentgeo.spacetime", "edit_distance")
        ed_same = float(edit_distance(den64, a[2], b[2], sigma_min=sigma_min))
        diffed_note = "DiffED of an image with itself, from latentgeo.spacetime.edit_distance"
    else:
        ed_same = 0.0  # the geodesic from a point to itself is constant: length 0 by construction
        diffed_note = "an image with itself has DiffED 0 by construction"
    eu = [float((a[k] - b[k]).norm()) for k in range(2)]
    rows = [[f"same class ({int(yte[i0])} vs {int(yte[same])})", eu[0], lengths[0]],
            [f"different class ({int(yte[i0])} vs {int(yte[other])})", eu[1], lengths[1]],
            ["identical images", 0.0, ed_same]]
    ctx.res["spacetime"] = {"sigma_min": sigma_min, "pairs": rows, "energy": [float(v) for v in
                                                                               torch.as_tensor(geo.energy).reshape(-1)],
                            "history_energy": list(geo.history.get("energy", []))[-5:]}
    # Image strip along the second geodesic: the noisy points x_t and the denoised E[x0 | x_t].
    xs, ss = geo.xs[1], geo.sigmas[1]
    with torch.no_grad():
        dx = den64(xs, ss)
    plt = _plt()
    fig = _fig_grid(torch.cat([xs, dx]).float(), "geodesic: x_t (top) and E[x0|x_t] (bottom)",
                    nrow=xs.shape[0])
    ctx.rep.figure(fig, f"The spacetime geodesic between two held-out images (at sigma={sigma_min}): each column is "
                        "a point on the curve; it climbs to higher noise in the middle, where the two images become "
                        "indistinguishable, and comes back down.")
    fig2, ax = plt.subplots(figsize=(5, 3.2))
    ax.semilogy(np.linspace(0, 1, ss.shape[0]), ss.numpy(), marker="o")
    ax.set(xlabel="curve parameter s", ylabel="sigma along the geodesic")
    ax.grid(True, alpha=0.3)
    ctx.rep.figure(fig2, "Noise level along the geodesic.")
    ctx.rep.table(rows, header=["pair", "Euclidean distance", "DiffED (geodesic length)"])
    ctx.rep.text("Each point (x, sigma) of a diffusion model's spacetime stands for the distribution of clean images "
                 "that could have produced the noisy image x; the Fisher-Rao geometry of these distributions gives "
                 "curve lengths without simulation. The Diffusion Edit Distance (DiffED) is the length of the "
                 "shortest such path between two images, which passes through noise levels where the model "
                 f"'forgets' the details that differ ({diffed_note}). "
                 + ("In this run the different-class pair is farther apart than the same-class pair."
                    if lengths[1] > lengths[0] else
                    "In this run the same-class pair is not closer than the different-class pair (short optimisation)."))


def _as_double(den):
    import copy

    d = copy.deepcopy(den).double().eval()
    for p in d.parameters():
        p.requires_grad_(False)
    return d


def _stage_generation(ctx):
    from latentgeo.metrics import classifier_frechet_distance, mmd, sliced_wasserstein

    P = ctx.p
    n = P["n_gen"]
    kinds = {}
    for name, (enc, dec) in ctx.models.items():
        z = ctx.denoisers.get(name, (None, None))[1]
        if z is None:
            z = _batched(enc, ctx.x)
        kind, model = _fit_latent_flow(z, P["flow_steps"], P["den_batch"], ctx.seed, ctx.progress)
        zs = _sample_latents(kind, model, n, z.shape[1], P["flow_ode_steps"], ctx.seed)
        ctx.samples[f"{name.upper()} latent {kind.split(' (')[0]}"] = _batched(dec, zs.float()).clamp(-1, 1)
        kinds[name] = kind
    if not ctx.samples:
        raise _Unavailable("nothing to generate from (no trained autoencoder or denoiser)")
    ref = ctx.xte[:n]
    half = ctx.x[:min(n, ctx.x.shape[0])]
    cands = {"real training images (floor)": half, **ctx.samples}
    rows, res = [], {}
    for name, s in cands.items():
        g = torch.Generator().manual_seed(ctx.seed)
        m = {"cfd": classifier_frechet_distance(s, ref, ctx.clf),
             "sw": sliced_wasserstein(s, ref, 256, generator=g),
             "mmd": mmd(s.reshape(s.shape[0], -1), ref.reshape(ref.shape[0], -1))}
        res[name] = m
        rows.append([name, m["cfd"], m["sw"], m["mmd"]])
    ctx.res["generation"] = {"metrics": res, "n_samples": n, "latent_generator": kinds}
    ctx.rep.table(rows, header=["samples", "classifier Frechet distance (lower is better)",
                                "sliced Wasserstein", "MMD^2 (unbiased)"],
                  caption=f"{n} samples each against {ref.shape[0]} held-out images")
    for name, s in ctx.samples.items():
        if name == "pixel diffusion":
            continue
        ctx.rep.figure(_fig_grid(s[:30], name), f"Decoded samples: {name}.")
    gen = {k: v for k, v in res.items() if k != "real training images (floor)"}
    best = min(gen, key=lambda k: gen[k]["cfd"]) if gen else None
    floor = res["real training images (floor)"]["cfd"]
    txt = ("New latents were drawn with a generative model trained on each encoder's normalised latents "
           f"({', '.join(sorted(set(kinds.values()))) or 'none'}), then decoded to images. The metrics compare each "
           "set of samples with held-out real images: the classifier Frechet distance (FID on the package's own "
           "classifier features), the sliced Wasserstein distance in pixel space and the MMD. The first row, real "
           f"training images, shows the best value reachable at this sample size (CFD {floor:.3g}).")
    if best is not None:
        txt += f"\n\nLowest CFD in this run: {best} ({gen[best]['cfd']:.3g})."
    ctx.rep.text(txt)


_STAGE_FUNCS = {"data": _stage_data, "gpe": _stage_gpe, "vae": _stage_vae, "geometry": _stage_geometry,
                "diffusion": _stage_diffusion, "fisher": _stage_fisher, "spacetime": _stage_spacetime,
                "generation": _stage_generation}


class _Ctx:
    def __init__(self, data, out, seed, p, progress, rep):
        self.data, self.out, self.seed, self.p, self.progress, self.rep = data, out, seed, p, progress, rep
        self.res: Dict[str, Any] = {}
        self.models: Dict[str, Any] = {}
        self.denoisers: Dict[str, Any] = {}
        self.samples: Dict[str, torch.Tensor] = {}
        self.x = self.y = self.xte = self.yte = self.clf = None


def _resolve_budget(budget: Union[str, float, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(budget, dict):
        p = dict(PRESETS["full"])
        p.update(budget)
        return p
    if isinstance(budget, str):
        check_choice(budget, list(PRESETS), "budget")
        return dict(PRESETS[budget])
    f = float(budget)
    if not (math.isfinite(f) and f > 0):
        raise LatentgeoError(f"budget must be 'full', 'quick' or a positive scale factor, got {budget!r}")
    p = dict(PRESETS["full"])
    for k in ("clf_steps", "enc_steps", "dec_steps", "den_steps", "lat_den_steps", "geo_steps", "flow_steps"):
        p[k] = max(5, int(round(p[k] * f)))
    return p


def run_demo(data: str = "digits", out: Union[str, os.PathLike] = "runs/demo", seed: int = 0,
             budget: Union[str, float, Dict[str, Any]] = "full", progress: bool = True,
             stages: Optional[List[str]] = None, threads: Optional[int] = None) -> Path:
    """Run the end-to-end demo and write ``<out>/report.html`` and ``<out>/summary.json``; returns the report path.

    Args:
        data: ``"digits"`` (scikit-learn, embedded) or ``"fashion-mnist"`` (needs the Debian package
            ``dataset-fashion-mnist`` or ``$LATENTGEO_DATA``).
        out: run folder (created; the feature classifier is cached there and reused by later runs).
        seed: seed of every stage.
        budget: ``"full"`` (under 10 minutes on 2 CPU cores for digits), ``"quick"`` (a 1-2 minute smoke run),
            a float scaling the full preset's step counts, or a dict overriding preset entries.
        progress: rich progress bars and stage headers on the terminal.
        stages: subset of :data:`STAGES` to run (default all; later stages skip what they lack).
        threads: torch intra-op threads (default: leave torch's setting).
    """
    data = check_choice(str(data).lower().replace("_", "-"), ["digits", "fashion-mnist"], "data set")
    p = _resolve_budget(budget)
    stages = list(STAGES) if stages is None else [check_choice(s, STAGES, "stage") for s in stages]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    from latentgeo.report import Report
    from latentgeo._version import __version__

    rep = Report(f"latentgeo demo: {data}",
                 subtitle=f"latentgeo {__version__}, torch {torch.__version__}, {platform.machine()}, "
                          f"{torch.get_num_threads()} threads, seed {seed}, budget "
                          f"{budget if isinstance(budget, (str, float, int)) else 'custom'}")
    rep.text("This report was produced by `latentgeo demo`. It trains a geometry-preserving encoder (GPE) and a VAE, "
             "compares their latent geometry, trains diffusion models on pixels and on latents, measures how "
             "'diffusable' each latent space is with Fisher information curves, walks a spacetime geodesic between "
             "two images, and generates new images through each latent space. Every number below was measured in "
             "this run; short training budgets make them indicative, not definitive.")
    ctx = _Ctx(data, out, seed, p, progress, rep)
    con = _console() if progress else None
    summary: Dict[str, Any] = {"data": data, "seed": seed, "budget": budget if not isinstance(budget, dict) else p,
                               "preset": p, "stages": {}, "results": ctx.res, "torch_threads": torch.get_num_threads(),
                               "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)"}
    t_all = time.perf_counter()
    for st in STAGES:
        title = STAGE_TITLES[st]
        if st not in stages:
            continue
        if con is not None:
            con.rule(f"[bold]{title}")
        rep.section(title)
        t0 = time.perf_counter()
        status, msg = "ok", ""
        torch.manual_seed(seed)
        try:
            _STAGE_FUNCS[st](ctx)
        except _Unavailable as exc:
            status, msg = "not available", str(exc)
            rep.note(f"Not available in this version: {msg}.")
        except LatentgeoError:
            raise
        except Exception as exc:  # keep the demo going: report what failed and carry on
            status, msg = "error", f"{type(exc).__name__}: {exc}"
            rep.note(f"This stage failed: {msg}")
            summary.setdefault("tracebacks", {})[st] = traceback.format_exc()
        secs = time.perf_counter() - t0
        summary["stages"][st] = {"title": title, "seconds": round(secs, 2), "status": status, "message": msg}
        rep.text(f"Stage time: {secs:.1f} s.")
        if con is not None:
            con.print(f"  {title}: {status} in {secs:.1f} s" + (f" ({msg})" if msg else ""))
    total = time.perf_counter() - t_all
    summary["total_seconds"] = round(total, 2)
    rep.section("Timings", f"Total: {total:.1f} s on {torch.get_num_threads()} torch threads.")
    rep.table([[v["title"], v["seconds"], v["status"]] for v in summary["stages"].values()],
              header=["stage", "seconds", "status"])
    path = rep.write(out / "report.html")
    atomic_write_json(out / "summary.json", _jsonable(summary))
    if con is not None:
        con.print(f"report: {path}")
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
