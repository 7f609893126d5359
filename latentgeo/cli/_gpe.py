"""``latentgeo train ae`` (GPE and the VAE/AE/MDS baselines) and ``latentgeo geometry`` (geometry of an encoder)."""
from __future__ import annotations

from typing import Optional

import typer

from latentgeo.cli._options import (MAX_BATCH, MAX_SAMPLES, MAX_STEPS, MAX_WIDTH, ModelOptions, model_spec_options,
                                    opt_device, opt_float, opt_int, opt_out_dir, opt_seed)

#: ``geometry`` uses all pairs of its points (several dense n x n float64 matrices): beyond this it runs out of memory.
MAX_GEOMETRY_POINTS = 10_000


def _load_data(name: str, split: str, n: Optional[int], seed: int, pad: Optional[bool]):
    from latentgeo.data import load

    key = name.strip().lower()
    if pad is None:  # Fashion-MNIST defaults to the paper's 32x32 setting (the conv nets need sides % 4 == 0)
        pad = key in ("fashion-mnist", "fashion_mnist", "fmnist", "fashionmnist")
    return load(name, split=split, n=n, seed=seed, pad=pad)


def train_ae(
    method: str = typer.Option("gpe", "--method", help="gpe | vae | ae | vae-mds | ae-mds."),
    data: str = typer.Option(..., "--data", help="Data set name (see `latentgeo data list`) or a .npy/.npz/PNG path."),
    out: str = opt_out_dir(..., "--out", help="Output folder (encoder/decoder checkpoints, config.json, metrics, "
                                              "autoencoder.json)."),
    steps: int = opt_int(2000, "--steps", help="Encoder steps (GPE) or joint steps (baselines).", lo=1,
                         hi=MAX_STEPS),
    decoder_steps: Optional[int] = opt_int(None, "--decoder-steps", help="GPE decoder steps (default --steps).",
                                           lo=1, hi=MAX_STEPS),
    latent_dim: Optional[int] = opt_int(None, "--latent-dim", help="Latent dimension (default 30 for images, 2 for "
                                                                   "vectors).", lo=1, hi=MAX_WIDTH),
    gme_threshold: Optional[float] = opt_float(None, "--gme-threshold", help="GPE: stop the encoder once the "
                                                                             "held-out GME cost is below this.",
                                               lo=0, lo_open=True),
    kl_weight: float = opt_float(0.1, "--kl-weight", help="beta of the per-dimension KL (vae, vae-mds).", lo=0),
    mds_weight: float = opt_float(1.0, "--mds-weight", help="Weight of the MDS stress (vae-mds, ae-mds).", lo=0),
    arch: str = typer.Option("auto", "--arch", help="auto | mlp | conv."),
    n: Optional[int] = opt_int(None, "--n", help="Training samples (default: all / 10000 synthetic).", lo=2,
                               hi=MAX_SAMPLES),
    n_val: Optional[int] = opt_int(None, "--n-val", help="Held-out samples for validation (default: up to 1000 of "
                                                         "the test split).", lo=2, hi=MAX_SAMPLES),
    batch_size: int = opt_int(100, "--batch-size", help="Minibatch size (>= 2: the GME cost compares pairs).",
                              lo=2, hi=MAX_BATCH),
    lr: float = opt_float(1e-3, "--lr", help="Adam learning rate (betas 0.5, 0.999).", lo=0, lo_open=True, hi=10),
    seed: int = opt_seed(),
    pad: Optional[bool] = typer.Option(None, "--pad/--no-pad", help="Pad 28x28 images to 32x32 (default on for fashion-mnist)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out with the same settings (only "
                                                        "--steps / --decoder-steps may grow)."),
    engine: str = typer.Option("shared", "--engine", help="shared (latentgeo.train loop: progress bar, DDP via torchrun) | fit (alias of shared)."),
    device: str = opt_device("auto", help="auto (CUDA when available) | cpu | cuda | cuda:K."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar / log lines."),
    decoder: str = typer.Option("wide", "--decoder",
                                help="Image decoder: wide (default) | lean (cheaper per step) | mlp (fully connected)."),
) -> None:
    """Train an encoder/decoder: GPE (encoder on the GME cost, then decoder with the encoder frozen) or a jointly
    trained baseline with the same architectures."""
    import math
    from pathlib import Path

    from latentgeo.autoencoders import METHODS, train_autoencoder
    from latentgeo.autoencoders.nets import DECODERS
    from latentgeo.errors import LatentgeoError, check_choice

    check_choice(method, METHODS, "method")
    check_choice(engine, ("shared", "fit"), "engine")
    check_choice(arch, ("auto", "mlp", "conv"), "--arch")
    check_choice(decoder, DECODERS, "--decoder")
    if method != "gpe" and (decoder_steps is not None or gme_threshold is not None):
        raise LatentgeoError(f"--decoder-steps and --gme-threshold are GPE settings; method '{method}' trains "
                             "jointly for --steps, so drop them (or use --method gpe)")
    outp = Path(out)
    x = _load_data(data, "train", n, seed, pad)
    if n_val is None:  # small test splits (digits: 359) are used whole
        xv = _load_data(data, "test", None, seed, pad)[:1000]
    else:
        xv = _load_data(data, "test", n_val, seed, pad)
    if latent_dim is None:
        latent_dim = 30 if x.ndim == 4 else min(2, math.prod(x.shape[1:]))
    # train_autoencoder holds the run-folder lock for the whole run, refuses a folder holding another run (or a
    # started one without --resume) and, on --resume, changed settings -- all before the first step.
    enc, dec, info = train_autoencoder(
        method, x, xv, latent_dim=latent_dim, arch=arch, steps=steps, decoder_steps=decoder_steps,
        gme_threshold=gme_threshold, kl_weight=kl_weight, mds_weight=mds_weight, batch_size=batch_size, lr=lr,
        seed=seed, out=outp, resume=resume, verbose=not quiet, engine=engine, device=device, decoder=decoder,
        extra={"data": data, "pad": bool(x.shape[-1] == 32 and pad is not False and x.ndim == 4), "n": n})
    typer.echo(f"saved {method} autoencoder to {outp}/ (encoder.safetensors, decoder.safetensors, autoencoder.json)")
    typer.echo(f"held-out MSE {info['val_mse']:.5g}  held-out GME {info['val_gme']:.5g}  "
               f"train seconds {info['seconds']:.1f}")


@model_spec_options("encoder", help={"subfolder": "Component of a diffusers pipeline folder given as ENCODER "
                                                   "(default: vae/).",
                                     "code": "module:factory -- your own encoder x -> z, built by your Python code "
                                             "(instead of ENCODER; imported only because you name it here)."})
def geometry(
    directory: Optional[str] = typer.Argument(None, help="The encoder: a folder written by `latentgeo train ae` (or an "
                                                         "encoder .safetensors), a diffusers VAE / pipeline folder, a "
                                                         "TorchScript file x -> z (or use --code)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (default: the one it was trained on)."),
    n: Optional[int] = opt_int(None, "--n", help="Held-out points (default: up to 1000 of the test split; all pairs "
                                                 "are used).", lo=3, hi=MAX_GEOMETRY_POINTS),
    k: int = opt_int(10, "--k", help="Neighbours for the k-NN overlap.", lo=1, hi=MAX_GEOMETRY_POINTS),
    eps: float = opt_float(0.05, "--eps", help="Trimming level of the bi-Lipschitz constant, in (0, 0.5).", lo=0,
                           hi=0.5, lo_open=True, hi_open=True),
    rescale: str = typer.Option("none", "--rescale", help="none | median (rescale latents by median d_X/d_Z)."),
    plots: Optional[str] = opt_out_dir(None, "--plots", help="Folder for geometry.json and the PNG plots "
                                                             "(default DIR/geometry for latentgeo runs)."),
    seed: int = opt_seed(),
    pad: Optional[bool] = typer.Option(None, "--pad/--no-pad"),
    no_gw: bool = typer.Option(False, "--no-gw", help="Skip the Gromov-Wasserstein discrepancy."),
    device: str = opt_device(help="Where the encoder runs: auto (CUDA when available) | cpu | cuda | cuda:K "
                                  "(the metrics are computed on the CPU)."),
    model_opts: ModelOptions = None,
) -> None:
    """Held-out geometry of a trained encoder: distance-ratio quantiles, (beta, eps) curve, trimmed bi-Lipschitz
    constant, Spearman, k-NN overlap, Gromov-Wasserstein; writes geometry.json and plots."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from latentgeo.autoencoders import embed, geometry_report, plot_geometry
    from latentgeo.autoencoders.training import check_autoencoder_dir
    from latentgeo.checkpoint import atomic_write_json
    from latentgeo.cli._options import default_out, model_kind, precheck_input, read_json_file, resolve_model
    from latentgeo.errors import LatentgeoError, check_choice
    from latentgeo.resolve import ACCEPTED, check_input_shape
    from latentgeo.runfolder import check_output_dir
    from latentgeo.train import resolve_device

    check_choice(rescale, ("none", "median"), "--rescale")
    if directory is None and model_opts.code is None:
        raise LatentgeoError(f"no encoder given; pass ENCODER ({ACCEPTED})")
    ours = directory is not None and model_kind(directory) == "latentgeo"
    meta = {}
    if ours:
        d = check_autoencoder_dir(directory, "", allow_file=True)
        if d.is_dir() and (d / "autoencoder.json").exists():
            meta = read_json_file(d / "autoencoder.json", f"re-train it with `latentgeo train ae --out {d}` into a new "
                                                          "folder, or pass --data NAME to use the encoder alone")
    data = data or meta.get("data")
    if data is None:
        what = f"'{directory}'" if directory is not None else f"--code {model_opts.code}"
        raise LatentgeoError(f"no data set is recorded with the encoder {what}; pass --data NAME")
    if ours:
        out_dir = Path(plots) if plots else (d / "geometry" if d.is_dir() else d.parent / "geometry")
    else:
        out_dir = default_out(directory, "geometry", plots, "--plots")
    check_output_dir(out_dir, "--plots" if plots else "the plots folder (--plots)")
    if not ours:  # data vs a diffusers VAE's config first: a channel mismatch fails before the model is loaded
        xv = _load_data(data, "test", n, seed, pad) if n is not None else \
            _load_data(data, "test", None, seed, pad)[:1000]
        precheck_input(directory, tuple(xv.shape[1:]), model_opts, what="ENCODER")
    enc, _, info = resolve_model("encoder", directory, model_opts, device=resolve_device(device), what="ENCODER",
                                 hint="a folder written by `latentgeo train ae`, a diffusers VAE folder")
    in_shape = list(getattr(enc, "in_shape", []) or [])
    if ours:
        if pad is None and len(in_shape) == 3 and in_shape[-1] == 32:
            pad = True
        xv = _load_data(data, "test", n, seed, pad) if n is not None else \
            _load_data(data, "test", None, seed, pad)[:1000]
    if ours and list(xv.shape[1:]) != in_shape:
        raise LatentgeoError(f"'{data}' samples have shape {list(xv.shape[1:])} but the encoder in '{directory}' "
                             f"takes {in_shape}; pass the --data (and --pad) it was trained on")
    try:
        check_input_shape(enc, tuple(xv.shape[1:]))  # e.g. 1-channel data into a 3-channel VAE: one line, at once
    except LatentgeoError as exc:
        raise LatentgeoError(f"ENCODER: {exc}") from None
    rng = info.get("input_range")
    if rng and (float(xv.min()) < rng[0] - 1e-3 or float(xv.max()) > rng[1] + 1e-3):
        typer.echo(f"note: '{data}' has values in [{float(xv.min()):.3g}, {float(xv.max()):.3g}] but the encoder "
                   f"expects [{rng[0]:g}, {rng[1]:g}]")
    if k >= xv.shape[0]:
        raise LatentgeoError(f"--k {k} needs more than {k} held-out points but there are {xv.shape[0]}; pass a "
                             "smaller --k or a larger --n")
    z = embed(enc, xv, batch_size=256 if ours else 32)
    rep = geometry_report(enc, xv, z=z, k=k, eps=eps, rescale=rescale, gw=not no_gw, seed=seed,
                          max_points=xv.shape[0], return_pairs=True)
    pairs = rep.pop("pairs")
    label = meta.get("method") or info.get("class") or info.get("source", "")
    atomic_write_json(out_dir / "geometry.json", {**rep, "data": data, "method": meta.get("method"),
                                                  "encoder": info.get("spec"), "code": model_opts.code})
    paths = plot_geometry({**rep, "pairs": pairs}, out_dir, x=xv if xv.ndim == 2 else None,
                          z=z if xv.ndim == 2 else None, title=label)
    t = Table(title=f"geometry of {label or 'encoder'} on held-out {data} ({rep['n_points']} points, "
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
