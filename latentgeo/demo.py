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


def _need(module: str, *names: str):
    """Import ``module`` and return the named attributes, or raise :class:`_Unavailable`."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise _Unavailable(f"{module} is not available ({exc})") from None
    out = []
    for n in names:
        if not hasattr(mod, n):
            raise _Unavailable(f"{module}.{n} is not available in this version")
        out.append(getattr(mod, n))
    return out[0] if len(out) == 1 else out


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


# ------------------------------------------------------------------------------------------ training adapters

class _StepBar:
    """A rich progress bar advanced by a forward hook on ``module``: one training-mode forward = one step.

    The autoencoder trainers have no progress callback; a forward hook (public PyTorch API) counts their steps
    without touching their code. Evaluation passes run in eval mode and are not counted.
    """

    def __init__(self, module: torch.nn.Module, total: int, description: str, enabled: bool):
        self.module, self.total, self.description, self.enabled = module, total, description, enabled

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.p.__enter__()
        self.task = self.p.add_task(self.description, total=self.total)

        def hook(mod, inp, out):
            if mod.training:
                self.p.advance(self.task)

        self.h = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *a):
        if self.enabled:
            self.h.remove()
            self.p.update(self.task, completed=self.total)
            self.p.__exit__(*a)


def _fit_gpe(x, x_val, d, enc_steps, dec_steps, batch, seed, progress):
    Encoder, Decoder, train_gpe_encoder, train_decoder, finalise_normalisation = _need(
        "latentgeo.autoencoders", "Encoder", "Decoder", "train_gpe_encoder", "train_decoder", "finalise_normalisation")
    torch.manual_seed(seed)
    shape = list(x.shape[1:])
    enc, dec = Encoder(shape, d), Decoder(shape, d)
    ev = max(1, enc_steps // 10)
    with _StepBar(enc.body, enc_steps, "GPE encoder (GME cost)", progress):
        r1 = train_gpe_encoder(enc, x, x_val, steps=enc_steps, eval_every=ev, batch_size=batch, seed=seed)
    finalise_normalisation(enc, None, x, decoder_on_raw=False)
    with _StepBar(dec.net, dec_steps, "GPE decoder (frozen encoder)", progress):
        r2 = train_decoder(dec, enc, x, x_val, steps=dec_steps, eval_every=max(1, dec_steps // 10),
                           batch_size=batch, seed=seed)
    return enc.eval(), dec.eval(), {"encoder": r1, "decoder": r2}


def _fit_vae(x, x_val, d, steps, batch, seed, progress, kl_weight: float = 0.1):
    Encoder, Decoder, train_joint, finalise_normalisation = _need(
        "latentgeo.autoencoders", "Encoder", "Decoder", "train_joint", "finalise_normalisation")
    torch.manual_seed(seed)
    shape = list(x.shape[1:])
    enc, dec = Encoder(shape, d, variational=True), Decoder(shape, d)
    with _StepBar(enc.body, steps, "beta-VAE (joint)", progress):
        r = train_joint("vae", enc, dec, x, x_val, steps=steps, kl_weight=kl_weight,
                        eval_every=max(1, steps // 10), batch_size=batch, seed=seed)
    finalise_normalisation(enc, dec, x, decoder_on_raw=True)
    return enc.eval(), dec.eval(), {"joint": r}


def _fit_latent_flow(z: torch.Tensor, steps: int, batch: int, seed: int, progress: bool):
    """Flow matching on the normalised latents (conditional FM, independent coupling)."""
    fit_flow = _need("latentgeo.flows", "fit_flow")
    return fit_flow(z, steps=steps, batch_size=batch, seed=seed, progress=progress,
                    net_kwargs={"hidden": 256, "depth": 3})


def _sample_latents(model, n: int, d: int, ode_steps: int, seed: int) -> torch.Tensor:
    flow_sample = _need("latentgeo.flows", "flow_sample")
    g = torch.Generator().manual_seed(seed)
    return flow_sample(model, torch.randn(n, d, generator=g), steps=ode_steps, method="heun")


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


def _recon_mse(enc, dec, x) -> float:
    return float((_batched(lambda b: dec(enc(b)), x) - x).pow(2).mean())


def _stage_gpe(ctx):
    P = ctx.p
    enc, dec, info = _fit_gpe(ctx.x, ctx.xte, P["latent_dim"], P["enc_steps"], P["dec_steps"], P["ae_batch"],
                              ctx.seed, ctx.progress)
    ctx.models["gpe"] = (enc, dec)
    mse = _recon_mse(enc, dec, ctx.xte)
    h1 = info["encoder"]["history"]
    ctx.res["gpe"] = {"latent_dim": P["latent_dim"], "encoder_steps": info["encoder"]["steps"],
                      "decoder_steps": info["decoder"]["steps"], "encoder_seconds": info["encoder"]["seconds"],
                      "decoder_seconds": info["decoder"]["seconds"], "held_out_gme": h1[-1].get("val_gme"),
                      "test_mse": mse, "history": {k: v["history"] for k, v in info.items()}}
    ctx.rep.text(f"The GPE encoder (latent dimension {P['latent_dim']}) was trained ALONE for {P['enc_steps']} steps "
                 "to make latent distances match pixel distances (the Gromov-Monge embedding cost, held-out value "
                 f"{h1[-1].get('val_gme', float('nan')):.4f}; about {100 * math.sqrt(max(h1[-1].get('val_gme', 0), 0)) / 2:.0f}% "
                 f"RMS distortion of distances), then frozen; a decoder was trained on it for {P['dec_steps']} "
                 f"steps. Held-out reconstruction MSE: {mse:.4f} (pixels in [-1, 1]).")
    ctx.rep.figure(_fig_grid(torch.cat([ctx.xte[:10], _batched(lambda b: dec(enc(b)), ctx.xte[:10])]),
                             "top: held-out, bottom: GPE reconstruction"), "GPE reconstructions.")


def _stage_vae(ctx):
    P = ctx.p
    steps = P["enc_steps"] + P["dec_steps"]  # as many optimiser steps as GPE's two stages together
    enc, dec, info = _fit_vae(ctx.x, ctx.xte, P["latent_dim"], steps, P["ae_batch"], ctx.seed, ctx.progress)
    ctx.models["vae"] = (enc, dec)
    mse = _recon_mse(enc, dec, ctx.xte)
    ctx.res["vae"] = {"latent_dim": P["latent_dim"], "steps": info["joint"]["steps"], "kl_weight": 0.1,
                      "seconds": info["joint"]["seconds"], "test_mse": mse, "history": info["joint"]["history"]}
    ctx.rep.text(f"A beta-VAE (KL weight 0.1 per latent dimension) with the same encoder/decoder architecture was "
                 f"trained jointly for {steps} steps, as many as GPE's encoder and decoder stages together. Held-out "
                 f"reconstruction MSE (decoding the latent mean): {mse:.4f}.")
    ctx.rep.figure(_fig_grid(torch.cat([ctx.xte[:10], _batched(lambda b: dec(enc(b)), ctx.xte[:10])]),
                             "top: held-out, bottom: VAE reconstruction"), "VAE reconstructions.")
    g = ctx.res.get("gpe")
    if g and g.get("history"):
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3.6))
        t_enc = g["encoder_seconds"]
        hd = [r for r in g["history"]["decoder"] if r.get("val_mse") is not None]
        ax.plot([t_enc + r["seconds"] for r in hd], [r["val_mse"] for r in hd], marker="o", ms=3,
                label="GPE (decoder stage, after the encoder stage)")
        hv = [r for r in info["joint"]["history"] if r.get("val_mse") is not None]
        ax.plot([r["seconds"] for r in hv], [r["val_mse"] for r in hv], marker="o", ms=3, label="beta-VAE (joint)")
        ax.axvline(t_enc, color="gray", ls=":", lw=1, label="GPE encoder stage ends")
        ax.set(xlabel="training seconds (wall clock)", ylabel="held-out reconstruction MSE", yscale="log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ctx.rep.figure(fig, "Held-out reconstruction error against training time, GPE end to end vs the VAE.")
        gm = g["test_mse"]
        ctx.rep.text(f"End to end, GPE took {t_enc + g['decoder_seconds']:.0f} s (encoder {t_enc:.0f} s) and the VAE "
                     f"{info['joint']['seconds']:.0f} s for the same number of steps; final held-out MSE "
                     f"{gm:.4f} vs {mse:.4f}: " + ("GPE reconstructs better at equal steps." if gm < mse else
                                                  "the VAE reconstructs better in this run.")
                     + " (The paper reports GPE's decoder reaching a given error in 3x to 900x fewer iterations "
                       "than a VAE's; this run is far smaller.)")


def _stage_geometry(ctx):
    geometry_report = _need("latentgeo.autoencoders", "geometry_report")
    if not ctx.models:
        raise _Unavailable("no trained encoder (the autoencoder stages did not run)")
    n = min(300, ctx.xte.shape[0])
    x = ctx.xte[:n]
    rows, geo = [], {}
    plt = _plt()
    fig, axes = plt.subplots(1, len(ctx.models), figsize=(4.2 * len(ctx.models), 3.6), squeeze=False)
    for ax, (name, (enc, _)) in zip(axes[0], ctx.models.items()):
        g = geometry_report(enc, x, max_points=n, gw=True, gw_points=min(200, n), seed=ctx.seed, return_pairs=True)
        pairs = g.pop("pairs")
        dx, dz = np.asarray(pairs["dx"]), np.asarray(pairs["dz"])
        geo[name] = g
        rows.append([name.upper(), g["spearman"], g["knn_overlap"], g["trimmed_bilipschitz"], g["gw"], g["gme"]])
        idx = np.random.default_rng(0).choice(dx.shape[0], min(3000, dx.shape[0]), replace=False)
        ax.scatter(dx[idx], dz[idx], s=2, alpha=0.4)
        ax.set(xlabel="pixel distance", ylabel="latent distance (raw T(x))",
               title=f"{name.upper()}: Spearman {g['spearman']:.3f}")
    ctx.res["geometry"] = geo
    ctx.rep.table(rows, header=["encoder", "Spearman of distances", "10-NN overlap",
                                f"trimmed bi-Lipschitz (eps={geo[next(iter(geo))]['eps']})",
                                "Gromov-Wasserstein", "GME cost (raw latents)"],
                  caption=f"Held-out geometry on {n} test images ({n * (n - 1) // 2} pairs)")
    ctx.rep.figure(fig, "Pairwise distances: pixels vs latents (held-out pairs).")
    txt = ("How faithfully does each latent space keep the distances between images? A Spearman correlation of 1 "
           "means the latent distances rank the pairs exactly as pixel distances do; the 10-NN overlap is the share "
           "of each image's nearest neighbours that stay neighbours; the trimmed bi-Lipschitz constant (ratio of the "
           "95% and 5% quantiles of latent/pixel distance ratios) is 1 for a perfect similarity and grows with "
           "distortion; the Gromov-Wasserstein discrepancy is 0 for an isometry up to scale. The GME cost is what "
           "GPE minimises and depends on the latent scale, so it is only meaningful for GPE.")
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
    axes[2].axhline((D - d) / (D - 2), color="gray", ls="--", lw=1, label="(D-d)/(D-2), toy reference")
    axes[2].axhline((D - d) / D, color="gray", ls=":", lw=1, label="(D-d)/D, large-noise limit")
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
           "encoder changed the problem a lot. Part of the deviation is unavoidable: for data on a k-dimensional "
           f"subspace, merely dropping from D = {D} to d = {d} dimensions gives D_R = (D-d)/(D-k) at small noise "
           f"(the dashed line is the paper's toy case k = 2: {(D - d) / (D - 2):.2f}); the rest comes from how the "
           "encoder distorts and bends the data, and from the latents' scale (they are normalised to E|z|^2 = d). "
           "At large noise every noised distribution looks like a wide Gaussian, R is about -n/tau^2 in n "
           f"dimensions, and D_R tends to (D-d)/D = {(D - d) / D:.2f} (dotted line) whatever the encoder.")
    if len(rows) == 2:
        a, b = rows[0], rows[1]
        lo = a if a[2] < b[2] else b
        txt += (f"\n\nIn this run the {lo[0]} deviate less from pixel space over the noise range (median D_R "
                f"{lo[2]:.2f} vs {(b if lo is a else a)[2]:.2f}).")
    ctx.rep.text(txt)
    if ctx.models:
        _encoder_diagnostics(ctx)


def _encoder_diagnostics(ctx):
    """The encoder side of the diffusability report (no denoisers: seconds), beside the Fisher curves above."""
    diagnose = _need("latentgeo.fisher.diagnosis", "diagnose")
    n = min(600, ctx.x.shape[0])
    s = diagnose({k: enc for k, (enc, _) in ctx.models.items()}, ctx.x[:n], fisher=False,
                 decoders={k: dec for k, (_, dec) in ctx.models.items() if dec is not None}, n_penalty=min(128, n),
                 n_geometry=n, seed=ctx.seed)
    ctx.res["fisher"]["encoder_diagnostics"] = {"ranking": s["ranking"], "encoders": {
        k: {kk: e[kk] for kk in ("score", "features", "tangential", "curvature_at_scale", "neighbourhood",
                                 "latent_manifold_curvature", "reconstruction")} for k, e in s["encoders"].items()}}
    rows = []
    for k in s["ranking"]:
        e = s["encoders"][k]
        t, nb, rec = e["tangential"], e["neighbourhood"], e["reconstruction"] or {}
        lc = (e["latent_manifold_curvature"] or {}).get("ratio_to_data")
        rows.append([k.upper(), e["score"], f"{t['anisotropy']:.3f} ± {t['anisotropy_se']:.3f}",
                     f"{nb['trustworthiness']:.3f} ± {nb['trustworthiness_se']:.3f}",
                     f"{nb['continuity']:.3f} ± {nb['continuity_se']:.3f}", lc, rec.get("psnr")])
    ctx.rep.table(rows, header=["encoder", "score (higher = more diffusable)", "tangential anisotropy",
                                "trustworthiness", "continuity", "latent / data curvature", "recon. PSNR dB"])
    best = s["ranking"][0].upper()
    ctx.rep.text("D_R alone is dominated by the dimensional compression both encoders share, so the report also "
                 "measures the encoder itself (the same numbers as `latentgeo diagnose`, which adds spectra, "
                 "equivariance and latent statistics): how unevenly it stretches the data's tangent directions, "
                 "whether latent neighbours are data neighbours (trustworthiness) and data neighbours stay latent "
                 "neighbours (continuity), and how much it bends the data manifold. Their combination, the "
                 f"diffusability score, ranks {best} first here.")


def _stage_spacetime(ctx):
    edit_distance_pairs = _need("latentgeo.spacetime", "edit_distance_pairs")
    if "pixels" not in ctx.denoisers:
        raise _Unavailable("no trained pixel denoiser (the diffusion stage did not run)")
    den64 = _as_double(ctx.denoisers["pixels"][0])
    P = ctx.p
    xte, yte = ctx.xte, ctx.yte
    # Pairs: for two anchor images, one partner of the same class and one of another class.
    ia, ja, ka, la = [], [], [], []
    for i0 in (0, 1):
        same = int(next(j for j in range(2, len(yte)) if yte[j] == yte[i0]))
        other = int(next(j for j in range(2, len(yte)) if yte[j] != yte[i0]))
        ia += [i0, i0]
        ja += [same, other]
        ka += ["same class", "different class"]
        la += [f"{int(yte[i0])} vs {int(yte[same])}", f"{int(yte[i0])} vs {int(yte[other])}"]
    A, B = xte[ia].double(), xte[ja].double()
    sigma_min = 0.1
    g = torch.Generator().manual_seed(ctx.seed)
    lengths, geo = edit_distance_pairs(den64, A, B, sigma_min=sigma_min, encode=True,
                                       encode_steps=P["sample_steps"], n_points=P["geo_points"],
                                       n_nodes=P["geo_nodes"], steps=P["geo_steps"], lr=0.1, n_probes=1,
                                       eval_probes=8, generator=g, progress=ctx.progress, return_geodesic=True)
    lengths = [float(v) for v in torch.as_tensor(lengths).reshape(-1)]
    eu = [float((A[k] - B[k]).norm()) for k in range(len(ia))]
    rows = [[ka[k], la[k], eu[k], lengths[k]] for k in range(len(ia))]
    mean_same = float(np.mean([lengths[k] for k in range(len(ia)) if ka[k] == "same class"]))
    mean_diff = float(np.mean([lengths[k] for k in range(len(ia)) if ka[k] != "same class"]))
    labels = [f"{ka[k]} ({la[k]})" for k in range(len(ia))]
    ctx.res["spacetime"] = {"sigma_min": sigma_min, "pairs": rows, "mean_same_class": mean_same,
                            "mean_different_class": mean_diff,
                            "energy": [float(v) for v in torch.as_tensor(geo.energy).reshape(-1)],
                            "seconds_per_step": float(geo.seconds_per_step)}
    # Image strip along the different-class geodesic: the noisy points x_t and the denoised E[x0 | x_t].
    xs, ss = geo.xs[1], geo.sigmas[1]
    with torch.no_grad():
        dx = den64(xs, ss)
    plt = _plt()
    fig = _fig_grid(torch.cat([xs, dx]).float(), "geodesic: x_t (top) and E[x0|x_t] (bottom)", nrow=xs.shape[0])
    ctx.rep.figure(fig, f"The spacetime geodesic between two held-out images of different classes (endpoints at "
                        f"sigma={sigma_min}): each column is a point on the curve, top the noisy point, bottom the "
                        "model's estimate of the clean image there.")
    fig2, ax = plt.subplots(figsize=(5, 3.2))
    for k in range(len(labels)):
        ax.semilogy(np.linspace(0, 1, geo.sigmas.shape[1]), geo.sigmas[k].numpy(), marker="o", ms=3, label=labels[k])
    ax.set(xlabel="curve parameter s", ylabel="sigma along the geodesic")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.rep.figure(fig2, "Noise level along the geodesics.")
    ctx.rep.table(rows, header=["pair", "labels", "Euclidean distance (pixels)", "DiffED (geodesic length)"])
    sem = _spacetime_matrix(ctx, den64, sigma_min)
    ctx.res["spacetime"]["matrix"] = sem
    ctx.rep.text("Each point (x, sigma) of a diffusion model's spacetime stands for the distribution of clean images "
                 "that could have produced the noisy image x; the Fisher-Rao geometry of these distributions gives "
                 "curve lengths without simulation. The Diffusion Edit Distance (DiffED) is the length of the "
                 "shortest such path between two images (here first carried to sigma = 0.1 by the probability-flow "
                 "ODE). The path rises to higher noise in the middle, where the model 'forgets' the details in "
                 "which the two images differ, and comes back down. "
                 + f"On {sem['images']} held-out images ({sem['pairs']} pairs, {sem['per_class']} per class; 95% "
                   "bootstrap confidence intervals over images) the mean DiffED is "
                   f"{_ci(sem['diffed']['mean_within'])} for same-class pairs and "
                   f"{_ci(sem['diffed']['mean_between'])} for different-class pairs. " + sem["sentence"]
                 + " (benchmarks/diffed_semantics.py finds the same with a perfect model of digits: the weak class "
                   "signal is DiffED's own, not only the small model's.)")
    rows2 = [[name, _ci(sem[key]["mean_within"]), _ci(sem[key]["mean_between"]), _ci(sem[key]["auc"], ".2f"),
              _ci(sem[key]["knn1"], ".2f")] for key, name in (("diffed", "DiffED"), ("euclid", "Euclidean"))]
    ctx.rep.table(rows2, header=["distance", "same-class mean [95% CI]", "different-class mean [95% CI]",
                                 "within-vs-between AUC", "leave-one-out 1-NN accuracy"])


def _ci(v, fmt: str = ".3g") -> str:
    ci = v.get("ci95")
    return f"{v['value']:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def _spacetime_matrix(ctx, den64, sigma_min: float, per_class: int = 2) -> Dict[str, Any]:
    """DiffED and Euclidean matrices of ``per_class`` held-out images per class, with class statistics and CIs
    (warm-started batched geodesics: about 190 pairs in a few seconds on the CPU)."""
    from latentgeo.spacetime.compare import semantic_sentence, semantic_statistics
    from latentgeo.spacetime.diffed import edit_distance_matrix

    P = ctx.p
    y = np.asarray(ctx.yte)
    rng = np.random.default_rng(ctx.seed)
    sel = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), min(per_class, int((y == c).sum())),
                                             replace=False) for c in np.unique(y)]))
    X = ctx.xte[sel].double()
    t0 = time.perf_counter()
    D = edit_distance_matrix(den64, X, sigma_min=sigma_min, encode=True, encode_steps=P["sample_steps"],
                             pair_batch=64, n_points=P["geo_points"], n_nodes=P["geo_nodes"],
                             steps=min(30, P["geo_steps"]), lr=0.1, n_probes=1, eval_probes=8,
                             warm_start="default", seed=ctx.seed).double().numpy()
    secs = time.perf_counter() - t0
    F = X.reshape(len(sel), -1)
    E = torch.cdist(F, F).numpy()
    st = semantic_statistics({"diffed": D, "euclid": E}, y[sel], boot=500, seed=ctx.seed)
    return {"images": int(len(sel)), "pairs": int(len(sel) * (len(sel) - 1) // 2), "per_class": per_class,
            "seconds": secs, "indices": sel.tolist(), "diffed": st["diffed"], "euclid": st["euclid"],
            "diffed_minus_euclid": st["diffed_minus_euclid"], "spearman": st["spearman"],
            "sentence": semantic_sentence(st)}


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
        model = _fit_latent_flow(z, P["flow_steps"], P["den_batch"], ctx.seed, ctx.progress)
        zs = _sample_latents(model, n, z.shape[1], P["flow_ode_steps"], ctx.seed)
        ctx.samples[f"{name.upper()} latent flow matching"] = _batched(dec, zs.float()).clamp(-1, 1)
        kinds[name] = "flow matching (conditional, independent coupling), Heun ODE sampler"
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
    txt = ("New latents were drawn with a flow-matching model trained on each encoder's normalised latents "
           f"(E|z|^2 = d; {P['flow_steps']} steps, {P['flow_ode_steps']} Heun steps to sample), then decoded to images; "
           "the pixel-space diffusion samples of the diffusion stage are scored alongside. The metrics compare each "
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


#: Upper bounds of the preset entries a budget dict may set (larger values are typos that never finish).
_BUDGET_MAX = dict(clf_steps=10 ** 6, latent_dim=1024, enc_steps=10 ** 6, dec_steps=10 ** 6, ae_batch=65536,
                   den_steps=10 ** 6, lat_den_steps=10 ** 6, den_batch=65536, fisher_n=100_000, fisher_sigmas=1000,
                   fisher_probes=1000, geo_points=10_000, geo_nodes=1000, geo_steps=10 ** 6, flow_steps=10 ** 6,
                   n_gen=100_000, sample_steps=10_000, flow_ode_steps=10_000, n_train_fashion=60_000)


def _resolve_budget(budget: Union[str, float, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(budget, dict):
        p = dict(PRESETS["full"])
        for k, v in budget.items():
            if k not in PRESETS["full"]:
                raise LatentgeoError(f"unknown budget entry '{k}'; choose among: {', '.join(PRESETS['full'])}")
            hi = _BUDGET_MAX.get(k, 10 ** 6)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise LatentgeoError(f"budget entry {k} must be an integer in 1 .. {hi:,}, got {v!r}; "
                                     f"pass a whole number of at most {hi:,}")
        p.update(budget)
        return p
    if isinstance(budget, bool) or not isinstance(budget, (str, int, float)):
        raise LatentgeoError(f"budget must be 'full', 'quick', a positive scale factor or a dict, got {budget!r}; "
                             "pass e.g. budget='quick' or budget=0.1")
    if isinstance(budget, str):
        check_choice(budget, list(PRESETS), "budget")
        return dict(PRESETS[budget])
    f = float(budget)
    if not (math.isfinite(f) and 0 < f <= 1000):
        raise LatentgeoError(f"budget must be 'full', 'quick' or a scale factor in (0, 1000], got {budget!r}; "
                             "pass a factor such as 0.1 (a tenth of the full run)")
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
    from latentgeo.runfolder import RunLock, check_output_dir

    data = check_choice(str(data).lower().replace("_", "-"), ["digits", "fashion-mnist"], "data set")
    p = _resolve_budget(budget)
    stages = list(STAGES) if stages is None else [check_choice(s, STAGES, "stage") for s in stages]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise LatentgeoError(f"seed must be an integer in 0 .. 2^32-1, got {seed!r}; pass e.g. seed=0")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 4096):
        raise LatentgeoError(f"threads must be an integer in 1 .. 4096, got {threads!r}; e.g. --threads 1")
    out = check_output_dir(out, "--out")
    with RunLock(out):  # one demo writes a run folder at a time (report, summary, cached classifier)
        return _run_demo(data, out, seed, budget, p, progress, stages, threads)


def _run_demo(data: str, out: Path, seed: int, budget: Any, p: Dict[str, Any], progress: bool, stages: List[str],
              threads: Optional[int]) -> Path:
    from latentgeo.threads import apply_threads

    apply_threads(int(threads) if threads else None)  # --threads, $LATENTGEO_THREADS, else from the cores and load
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
        t0, c0 = time.perf_counter(), time.process_time()
        status, msg = "ok", ""
        torch.manual_seed(seed)
        try:
            _STAGE_FUNCS[st](ctx)
        except _Unavailable as exc:
            status, msg = "not available", str(exc)
            rep.note(f"Not available in this version: {msg}.")
        except LatentgeoError as exc:
            if st == "data":  # the user's input (data set name, missing files): stop with the one-line fix
                raise
            status, msg = "error", f"LatentgeoError: {exc}"
            rep.note(f"This stage failed: {msg}")
            summary.setdefault("tracebacks", {})[st] = traceback.format_exc()
        except Exception as exc:  # keep the demo going: report what failed and carry on
            status, msg = "error", f"{type(exc).__name__}: {exc}"
            rep.note(f"This stage failed: {msg}")
            summary.setdefault("tracebacks", {})[st] = traceback.format_exc()
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        summary["stages"][st] = {"title": title, "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
                                 "status": status, "message": msg}
        rep.text(f"Stage time: {secs:.1f} s wall clock, {cpu:.1f} s CPU.")
        if con is not None:
            con.print(f"  {title}: {status} in {secs:.1f} s" + (f" ({msg})" if msg else ""))
    total = time.perf_counter() - t_all
    total_cpu = sum(v["cpu_seconds"] for v in summary["stages"].values())
    summary["total_seconds"] = round(total, 2)
    summary["total_cpu_seconds"] = round(total_cpu, 2)
    summary["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rep.section("Timings", f"Total: {total:.1f} s wall clock ({total_cpu:.1f} s CPU) on {torch.get_num_threads()} "
                           "torch threads. CPU time counts the work of all threads of this process; on a machine "
                           "shared with other jobs, wall-clock time is longer than on an idle one.")
    rep.table([[v["title"], v["seconds"], v["cpu_seconds"], v["status"]] for v in summary["stages"].values()],
              header=["stage", "wall seconds", "CPU seconds", "status"])
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
