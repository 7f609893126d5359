"""``latentgeo train diffusion`` (EDM denoiser), ``latentgeo train flow`` (flow matching) — on a data set, an array file
or, with ``--encoder AE_DIR``, in the normalised latent space of a trained encoder — and ``latentgeo sample`` (draw
samples; latent runs are decoded with the autoencoder's decoder)."""
from __future__ import annotations

from typing import Optional

import typer


# options shared by the training commands (typer reads these defaults as option declarations)
_PAD = typer.Option(None, "--pad/--no-pad", help="Pad 28x28 images to 32x32 (default: off, or as the --encoder's "
                                                 "input).")
_EMA = typer.Option(0.999, "--ema", help="EMA decay of the weights (0 disables).")
_DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:K.")
_LOG_EVERY = typer.Option(100, "--log-every")
_CKPT_EVERY = typer.Option(1000, "--ckpt-every")
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out exactly (same final weights).")
_QUIET = typer.Option(False, "--quiet", help="No progress bar.")


def _check_run_options(lr: float, ema: float, **positive_ints: int) -> None:
    """One-line errors for the options every training command shares."""
    from latentgeo.errors import LatentgeoError, check_positive

    for name, v in positive_ints.items():
        if v < 1:
            raise LatentgeoError(f"{name} must be a positive integer, got {v}")
    check_positive(lr, "--lr")
    if not 0 <= ema < 1:
        raise LatentgeoError(f"--ema must be in [0, 1), got {ema}")


def _training_data(data: Optional[str], n: Optional[int], seed: int, pad: Optional[bool], encoder: Optional[str]):
    """The training array and what to record about it: the data itself, or its normalised latents
    ``z = C (T(x) - m)`` ``[N, d]`` under the trained encoder in folder ``encoder``."""
    import json
    from pathlib import Path

    import torch

    from latentgeo.data import load
    from latentgeo.errors import LatentgeoError

    if encoder is None:
        if data is None:
            raise LatentgeoError("no data given; pass --data NAME (see `latentgeo data list`) or a .npy/.npz path")
        x = load(data, split="train", n=n, seed=seed, pad=bool(pad))
        if x.ndim == 3:  # [N, H, W] arrays: one channel
            x = x[:, None]
        return x, {"data": data, "image": x.ndim == 4}
    from latentgeo.autoencoders import encode_batched, load_encoder

    d = Path(encoder)
    if not d.is_dir():
        raise LatentgeoError(f"--encoder '{encoder}' is not a folder; pass the --out folder of `latentgeo train ae`")
    meta = json.loads((d / "autoencoder.json").read_text()) if (d / "autoencoder.json").exists() else {}
    data = data or meta.get("data")
    if data is None:
        raise LatentgeoError(f"no data set is recorded with the encoder in '{encoder}'; pass --data NAME")
    enc = load_encoder(d)
    if pad is None:  # the encoder's input size tells whether its images were padded to 32x32
        pad = len(enc.in_shape) == 3 and enc.in_shape[-1] == 32
    x = load(data, split="train", n=n, seed=seed, pad=bool(pad))
    if x.ndim == 3:
        x = x[:, None]
    if x[0].numel() != int(torch.tensor(enc.in_shape).prod()):
        raise LatentgeoError(f"'{data}' samples have shape {list(x.shape[1:])} but the encoder in '{encoder}' takes "
                             f"{list(enc.in_shape)}; pass the --data (and --pad) it was trained on")
    with torch.no_grad():
        z = encode_batched(enc, x.reshape(x.shape[0], *enc.in_shape)).float()
    return z, {"data": data, "image": False, "latent_of": str(d.resolve()), "method": meta.get("method"),
               "decoded_shape": list(enc.in_shape)}


def train_diffusion(
    data: Optional[str] = typer.Option(None, "--data", help="Data set name (see `latentgeo data list`) or a .npy/.npz "
                                                            "path (first array, or key `x`); with --encoder, "
                                                            "default: the encoder's data."),
    out: str = typer.Option(..., "--out", help="Output folder (config.json, metrics.jsonl, checkpoints)."),
    net: str = typer.Option("mlp", "--net", help="mlp | unet (unet needs images [N, C, H, W])."),
    steps: int = typer.Option(10000, "--steps", help="Total optimiser steps."),
    batch_size: int = typer.Option(256, "--batch-size", help="Global batch size (split over torchrun processes)."),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed"),
    n: Optional[int] = typer.Option(None, "--n", help="Training samples (default: all / 10000 synthetic)."),
    hidden: int = typer.Option(256, "--hidden", help="MLP width."),
    depth: int = typer.Option(4, "--depth", help="MLP residual blocks."),
    base: int = typer.Option(32, "--base", help="U-Net channels at the first level."),
    periodic: bool = typer.Option(False, "--periodic", help="MLP: sin/cos input embedding (angle data)."),
    ema: float = _EMA,
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Clip the gradient norm (0 disables)."),
    pad: Optional[bool] = _PAD,
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Train in the normalised latent space of this "
                                                                  "`latentgeo train ae` folder (latent diffusion)."),
    device: str = _DEVICE,
    log_every: int = _LOG_EVERY,
    ckpt_every: int = _CKPT_EVERY,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Train an EDM denoiser (sigma_data estimated from the data) on data or, with --encoder, on an encoder's
    latents. Multi-GPU: `torchrun --nproc_per_node=K -m latentgeo train diffusion ...`."""
    from latentgeo.diffusion import train_denoiser
    from latentgeo.errors import LatentgeoError, check_choice

    check_choice(net, ["mlp", "unet"], "net")
    _check_run_options(lr, ema, **{"--steps": steps, "--batch-size": batch_size, "--hidden": hidden,
                                   "--base": base, "--log-every": log_every, "--ckpt-every": ckpt_every})
    x, info = _training_data(data, n, seed, pad, encoder)
    if net == "unet" and x.ndim != 4:
        raise LatentgeoError(f"--net unet needs images [N, C, H, W] but '{info['data']}' has shape "
                             f"{tuple(x.shape)}; use --net mlp")
    kw = ({"hidden": hidden, "depth": depth, "periodic": periodic} if net == "mlp" else {"base": base})
    res = train_denoiser(x, out, net=net, steps=steps, batch_size=batch_size, lr=lr, seed=seed, ema=ema or None,
                         net_kwargs=kw, resume=resume, device=device, progress=not quiet,
                         data_info=info, log_every=log_every, ckpt_every=ckpt_every,
                         grad_clip=grad_clip or None)
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    last = res.metrics[-1]["loss"] if res.metrics else float("nan")
    typer.echo(f"trained {res.step} steps, final loss {last:.4g}; denoiser in {out} "
               f"(load with latentgeo.load_denoiser('{out}'))")


def train_flow(
    data: Optional[str] = typer.Option(None, "--data", help="Data set name or .npy/.npz path; with --encoder, "
                                                            "default: the encoder's data."),
    out: str = typer.Option(..., "--out", help="Output folder (config.json, metrics.jsonl, checkpoints)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Train in the normalised latent space of this "
                                                                  "`latentgeo train ae` folder (latent generation)."),
    coupling: str = typer.Option("independent", "--coupling", help="independent | ot (exact minibatch OT pairs: "
                                                                   "straighter paths, fewer ODE steps)."),
    steps: int = typer.Option(5000, "--steps", help="Total optimiser steps."),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed"),
    n: Optional[int] = typer.Option(None, "--n", help="Training samples (default: all)."),
    hidden: int = typer.Option(256, "--hidden", help="MLP width."),
    depth: int = typer.Option(4, "--depth", help="MLP residual blocks."),
    ema: float = _EMA,
    pad: Optional[bool] = _PAD,
    device: str = _DEVICE,
    log_every: int = _LOG_EVERY,
    ckpt_every: int = _CKPT_EVERY,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Train a flow-matching model from N(0, I) to the data or, with --encoder, to an encoder's normalised latents
    (sample and decode with `latentgeo sample OUT`)."""
    import math

    from latentgeo.errors import check_choice
    from latentgeo.flows import fit_flow

    check_choice(coupling, ["independent", "ot"], "--coupling")
    _check_run_options(lr, ema, **{"--steps": steps, "--batch-size": batch_size, "--hidden": hidden,
                                   "--depth": depth, "--log-every": log_every, "--ckpt-every": ckpt_every})
    x, info = _training_data(data, n, seed, pad, encoder)
    kw = {"in_dim": int(math.prod(x.shape[1:])), "hidden": hidden, "depth": depth, "max_freq": 100.0}
    info = {**info, "kind": "flow", "net": "mlp", "net_kwargs": kw, "coupling": coupling,
            "data_shape": list(x.shape[1:]), "n_train": int(x.shape[0])}
    fit_flow(x, steps=steps, batch_size=batch_size, lr=lr, seed=seed, coupling=coupling, net="mlp", net_kwargs=kw,
             ema=ema or None, device=device, progress=not quiet, out=out, resume=resume, config=info,
             log_every=log_every, ckpt_every=ckpt_every)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    typer.echo(f"trained {steps} steps; flow in {out} (sample with `latentgeo sample {out}`, load with "
               f"latentgeo.load_flow('{out}'))")


def sample_cmd(
    run: str = typer.Argument(..., help="Training folder written by `latentgeo train diffusion` or `train flow`."),
    n: int = typer.Option(64, "--n", help="Number of samples."),
    steps: int = typer.Option(32, "--steps", help="Sampler steps (diffusion: rho = 7 schedule, sigma 80 -> 0.002; "
                                                  "flow: uniform in t)."),
    sampler: str = typer.Option("heun", "--sampler", help="diffusion: heun | euler | euler_maruyama | "
                                                          "edm_stochastic; flow: heun | euler | dopri5 | rk4."),
    autoencoder: Optional[str] = typer.Option(None, "--autoencoder", help="Latent runs: decode with this "
                                                                          "`train ae` folder (default: the one "
                                                                          "recorded at training)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[str] = typer.Option(None, "--out", help="Output .npz (default RUN/samples.npz; PNG beside it)."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Samples per sampler call."),
    device: str = typer.Option("auto", "--device"),
    raw: bool = typer.Option(False, "--raw", help="Use the raw weights instead of the EMA weights."),
) -> None:
    """Draw samples from a trained denoiser or flow: writes samples.npz (key `x`; latent runs are decoded, with the
    latents under key `z`) and, for images or 2-D points, a PNG."""
    import json
    from pathlib import Path

    import numpy as np
    import torch

    from latentgeo.checkpoint import atomic_write_bytes
    from latentgeo.diffusion import SAMPLERS, load_denoiser, sample
    from latentgeo.errors import LatentgeoError, check_choice
    from latentgeo.flows import FLOW_METHODS, flow_sample, load_flow
    from latentgeo.train import resolve_device

    if n < 1 or steps < 1 or batch_size < 1:
        raise LatentgeoError("--n, --steps and --batch-size must be positive integers")
    runp = Path(run)
    if not runp.is_dir():
        raise LatentgeoError(f"'{run}' is not a training folder; pass the --out folder of `latentgeo train diffusion` "
                             "or `latentgeo train flow`")
    cfg_file = runp / "config.json"
    user = json.loads(cfg_file.read_text()).get("user", {}) if cfg_file.exists() else {}
    shape = user.get("data_shape")
    if shape is None:
        raise LatentgeoError(f"'{run}/config.json' does not record the data shape; re-train with this version")
    is_flow = user.get("kind") == "flow"
    check_choice(sampler, list(FLOW_METHODS if is_flow else SAMPLERS), "flow ODE method" if is_flow else "sampler")
    dev = resolve_device(device)
    model = (load_flow if is_flow else load_denoiser)(runp, ema=not raw, device=str(dev))
    g = torch.Generator(dev).manual_seed(seed)
    parts = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        if is_flow:
            z0 = torch.randn((b, *shape), generator=g, device=dev)
            parts.append(flow_sample(model, z0, steps=steps, method=sampler).cpu())
        else:
            parts.append(sample(model, (b, *shape), n_steps=steps, sampler=sampler, generator=g, device=dev).cpu())
    x = torch.cat(parts)
    arrays = {}
    ae_dir = autoencoder or user.get("latent_of")
    if ae_dir is not None:  # a latent run: decode the latents with the autoencoder's decoder
        from latentgeo.autoencoders import load_decoder

        if not Path(ae_dir).is_dir():
            raise LatentgeoError(f"the autoencoder folder '{ae_dir}' of this latent run is missing; pass "
                                 "--autoencoder DIR")
        dec = load_decoder(ae_dir).to(dev)
        p = next(dec.parameters())
        with torch.no_grad():
            xd = torch.cat([dec(x[i:i + batch_size].to(device=dev, dtype=p.dtype)).cpu()
                            for i in range(0, x.shape[0], batch_size)])
        arrays["z"] = x.numpy()
        x = xd.clamp(-1, 1) if user.get("decoded_shape") and len(user["decoded_shape"]) == 3 else xd
        shape = list(x.shape[1:])
    x = x.numpy()
    dest = Path(out) if out else runp / "samples.npz"
    if dest.suffix != ".npz":
        dest = dest.with_suffix(".npz")
    import io

    buf = io.BytesIO()
    np.savez(buf, x=x, **arrays)
    atomic_write_bytes(dest, buf.getvalue())
    msg = f"wrote {n} samples of shape {tuple(shape)} to {dest}" + (" (decoded; latents under `z`)" if arrays else "")
    png = _png(x)
    if png is not None:
        atomic_write_bytes(dest.with_suffix(".png"), png)
        msg += f" and {dest.with_suffix('.png')}"
    typer.echo(msg)


def _png(x) -> Optional[bytes]:
    """A PNG grid for images ``[N, C, H, W]`` in [-1, 1], a scatter plot for 2-D points, else None."""
    import io

    import numpy as np

    if x.ndim == 4 and x.shape[1] in (1, 3):
        from PIL import Image

        k = min(len(x), 64)
        cols = int(np.ceil(np.sqrt(k)))
        rows = int(np.ceil(k / cols))
        c, h, w = x.shape[1:]
        grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, c), 255, np.uint8)
        img = ((np.clip(x[:k], -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)
        for i in range(k):
            r, q = divmod(i, cols)
            grid[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = img[i]
        im = Image.fromarray(grid[..., 0] if c == 1 else grid)
        scale = max(1, 256 // max(grid.shape[:2]))
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
    if x.ndim == 2 and x.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()
    return None


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo train diffusion``, ``latentgeo train flow`` and ``latentgeo sample``."""
    train_app.command("diffusion")(train_diffusion)
    train_app.command("flow")(train_flow)
    app.command("sample")(sample_cmd)
