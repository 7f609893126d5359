"""``latentgeo train ae`` (GPE and the VAE/AE/MDS baselines) and ``latentgeo geometry`` (geometry of an encoder)."""
from __future__ import annotations

from typing import Optional

import typer


def _load_data(name: str, split: str, n: Optional[int], seed: int, pad: Optional[bool]):
    from latentgeo.data import load

    key = name.strip().lower()
    if pad is None:  # Fashion-MNIST defaults to the paper's 32x32 setting (the conv nets need sides % 4 == 0)
        pad = key in ("fashion-mnist", "fashion_mnist", "fmnist", "fashionmnist")
    return load(name, split=split, n=n, seed=seed, pad=pad)


def train_ae(
    method: str = typer.Option("gpe", "--method", help="gpe | vae | ae | vae-mds | ae-mds."),
    data: str = typer.Option(..., "--data", help="Data set name (see `latentgeo data list`) or a .npy/.npz/PNG path."),
    out: str = typer.Option(..., "--out", help="Output folder (encoder/decoder checkpoints, metrics, json)."),
    steps: int = typer.Option(2000, "--steps", help="Encoder steps (GPE) or joint steps (baselines)."),
    decoder_steps: Optional[int] = typer.Option(None, "--decoder-steps", help="GPE decoder steps (default --steps)."),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="Latent dimension (default 30 for images, 2 for vectors)."),
    gme_threshold: Optional[float] = typer.Option(None, "--gme-threshold", help="GPE: stop the encoder once the held-out GME cost is below this."),
    kl_weight: float = typer.Option(0.1, "--kl-weight", help="beta of the per-dimension KL (vae, vae-mds)."),
    mds_weight: float = typer.Option(1.0, "--mds-weight", help="Weight of the MDS stress (vae-mds, ae-mds)."),
    arch: str = typer.Option("auto", "--arch", help="auto | mlp | conv."),
    n: Optional[int] = typer.Option(None, "--n", help="Training samples (default: all / 10000 synthetic)."),
    n_val: Optional[int] = typer.Option(None, "--n-val",
                                        help="Held-out samples for validation (default: up to 1000 of the test split)."),
    batch_size: int = typer.Option(100, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (betas 0.5, 0.999)."),
    seed: int = typer.Option(0, "--seed"),
    pad: Optional[bool] = typer.Option(None, "--pad/--no-pad", help="Pad 28x28 images to 32x32 (default on for fashion-mnist)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out exactly."),
    engine: str = typer.Option("shared", "--engine", help="shared (latentgeo.train loop: progress bar, DDP via torchrun) | fit (built-in loop)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto (engine=shared)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar / log lines."),
    decoder: str = typer.Option("wide", "--decoder",
                                help="Image decoder: wide (default) | lean (cheaper per step) | mlp (fully connected)."),
) -> None:
    """Train an encoder/decoder: GPE (encoder on the GME cost, then decoder with the encoder frozen) or a jointly
    trained baseline with the same architectures."""
    import math
    from pathlib import Path

    import torch

    from latentgeo.autoencoders import METHODS, train_autoencoder
    from latentgeo.errors import LatentgeoError, check_choice, check_positive

    check_choice(method, METHODS, "method")
    check_choice(engine, ("shared", "fit"), "engine")
    for v, nm in ((steps, "--steps"), (batch_size, "--batch-size"), (1 if n_val is None else n_val, "--n-val")):
        if v < 1:
            raise LatentgeoError(f"{nm} must be a positive integer, got {v}")
    check_positive(lr, "--lr")
    from latentgeo.autoencoders.nets import DECODERS
    from latentgeo.errors import check_choice

    check_choice(decoder, DECODERS, "--decoder")
    outp = Path(out)
    if (outp / "autoencoder.json").exists() and not resume:
        raise LatentgeoError(f"'{out}' already holds a trained autoencoder; pass --resume to continue it or "
                             "choose another --out")
    if outp.exists() and (any(outp.glob("state_*.safetensors")) or any(outp.glob("*/state.safetensors"))) \
            and not resume:
        raise LatentgeoError(f"'{out}' holds an unfinished run; pass --resume to continue it or choose another --out")
    x = _load_data(data, "train", n, seed, pad)
    if n_val is None:  # small test splits (digits: 359) are used whole
        xv = _load_data(data, "test", None, seed, pad)[:1000]
    else:
        xv = _load_data(data, "test", n_val, seed, pad)
    if latent_dim is None:
        latent_dim = 30 if x.ndim == 4 else min(2, math.prod(x.shape[1:]))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    enc, dec, info = train_autoencoder(
        method, x, xv, latent_dim=latent_dim, arch=arch, steps=steps, decoder_steps=decoder_steps,
        gme_threshold=gme_threshold, kl_weight=kl_weight, mds_weight=mds_weight, batch_size=batch_size, lr=lr,
        seed=seed, out=outp, resume=resume, verbose=not quiet, engine=engine, device=device, decoder=decoder,
        extra={"data": data, "pad": bool(x.shape[-1] == 32 and pad is not False and x.ndim == 4), "n": n})
    typer.echo(f"saved {method} autoencoder to {outp}/ (encoder.safetensors, decoder.safetensors, autoencoder.json)")
    typer.echo(f"held-out MSE {info['val_mse']:.5g}  held-out GME {info['val_gme']:.5g}  "
               f"train seconds {info['seconds']:.1f}")


def geometry(
    directory: str = typer.Argument(..., help="Folder written by `latentgeo train ae` (or an encoder .safetensors)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (default: the one it was trained on)."),
    n: int = typer.Option(1000, "--n", help="Held-out points (all pairs are used)."),
    k: int = typer.Option(10, "--k", help="Neighbours for the k-NN overlap."),
    eps: float = typer.Option(0.05, "--eps", help="Trimming level of the bi-Lipschitz constant."),
    rescale: str = typer.Option("none", "--rescale", help="none | median (rescale latents by median d_X/d_Z)."),
    plots: Optional[str] = typer.Option(None, "--plots", help="Folder for the PNG plots (default DIR/geometry)."),
    seed: int = typer.Option(0, "--seed"),
    pad: Optional[bool] = typer.Option(None, "--pad/--no-pad"),
    no_gw: bool = typer.Option(False, "--no-gw", help="Skip the Gromov-Wasserstein discrepancy."),
) -> None:
    """Held-out geometry of a trained encoder: distance-ratio quantiles, (beta, eps) curve, trimmed bi-Lipschitz
    constant, Spearman, k-NN overlap, Gromov-Wasserstein; writes geometry.json and plots."""
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from latentgeo.autoencoders import embed, geometry_report, load_encoder, plot_geometry
    from latentgeo.checkpoint import atomic_write_json
    from latentgeo.errors import LatentgeoError

    d = Path(directory)
    if not d.exists():
        raise LatentgeoError(f"'{directory}' does not exist; pass the --out folder of `latentgeo train ae`")
    meta = {}
    if (d / "autoencoder.json").exists():
        meta = json.loads((d / "autoencoder.json").read_text())
    data = data or meta.get("data")
    if data is None:
        raise LatentgeoError("no data set recorded with this encoder; pass --data NAME")
    enc = load_encoder(d)
    if pad is None and enc.in_shape[-1] == 32 and len(enc.in_shape) == 3:
        pad = True
    xv = _load_data(data, "test", n, seed, pad)
    z = embed(enc, xv)
    rep = geometry_report(enc, xv, z=z, k=k, eps=eps, rescale=rescale, gw=not no_gw, seed=seed,
                          max_points=n, return_pairs=True)
    pairs = rep.pop("pairs")
    out_dir = Path(plots) if plots else (d / "geometry" if d.is_dir() else d.parent / "geometry")
    atomic_write_json(out_dir / "geometry.json", {**rep, "data": data, "method": meta.get("method")})
    paths = plot_geometry({**rep, "pairs": pairs}, out_dir, x=xv if xv.ndim == 2 else None,
                          z=z if xv.ndim == 2 else None, title=meta.get("method", ""))
    t = Table(title=f"geometry of {meta.get('method', 'encoder')} on held-out {data} ({rep['n_points']} points, "
                    f"{rep['n_pairs']} pairs)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    q = rep["ratio_quantiles"]
    rows = [("GME cost (held-out)", f"{rep['gme']:.4g}"),
            ("d_Z/d_X q01 / q50 / q99", f"{q['q01']:.3g} / {q['q50']:.3g} / {q['q99']:.3g}"),
            (f"trimmed bi-Lipschitz (eps={rep['eps']})", f"{rep['trimmed_bilipschitz']:.4g}"),
            ("Spearman of distances", f"{rep['spearman']:.4f}"),
            (f"{rep['k']}-NN overlap", f"{rep['knn_overlap']:.3f}")]
    if "gw" in rep:
        rows.append(("Gromov-Wasserstein (normalised)", f"{rep['gw']:.4g}"))
    for b, p in rep["beta_curve"]:
        rows.append((f"P(|r| <= log {b:g})", f"{p:.3f}"))
    if rep["scale"] != 1.0:
        rows.append(("latent rescale factor", f"{rep['scale']:.4g}"))
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    typer.echo(f"wrote {out_dir / 'geometry.json'} and " + ", ".join(p.name for p in paths))


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo train ae`` and ``latentgeo geometry``."""
    train_app.command("ae")(train_ae)
    app.command("geometry")(geometry)
