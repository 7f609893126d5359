"""``latentgeo train diffusion`` (EDM denoiser), ``latentgeo train flow`` (flow matching) — on a data set, an array file
or, with ``--encoder AE_DIR``, in the normalised latent space of a trained encoder — and ``latentgeo sample`` (draw
samples; latent runs are decoded with the autoencoder's decoder)."""
from __future__ import annotations

from typing import Optional

import typer

from latentgeo.cli._options import (MAX_BATCH, MAX_SAMPLES, MAX_STEPS, MAX_WIDTH, ModelOptions, model_spec_options,
                                    opt_device, opt_float, opt_int, opt_out_dir, opt_out_file, opt_seed)

#: Sampler steps above this are typos (the EDM / ODE schedules converge long before).
MAX_SAMPLER_STEPS = 100_000
#: Residual blocks / U-Net base channels above these are typos (they only end in out-of-memory crashes).
MAX_DEPTH = 1024
MAX_BASE = 1024
#: Refuse an MLP with more parameters than this (4 GB of float32 weights, 16 GB with Adam's state).
MAX_MLP_PARAMS = 1_000_000_000

# options shared by the training commands (typer reads these defaults as option declarations)
_PAD = typer.Option(None, "--pad/--no-pad", help="Pad 28x28 images to 32x32 (default: off, or as the --encoder's "
                                                 "input).")
_EMA = opt_float(0.999, "--ema", help="EMA decay of the weights, in [0, 1) (0 disables).", lo=0, hi=1, hi_open=True)
_DEVICE = opt_device()
_LOG_EVERY = opt_int(100, "--log-every", help="Log a metrics line every N steps.", lo=1, hi=MAX_STEPS)
_CKPT_EVERY = opt_int(1000, "--ckpt-every", help="Write a checkpoint every N steps.", lo=1, hi=MAX_STEPS)
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out exactly (same final weights).")
_QUIET = typer.Option(False, "--quiet", help="No progress bar.")
_LR = opt_float(2e-3, "--lr", help="Adam learning rate.", lo=0, lo_open=True, hi=10)
_SEED = opt_seed()
_N = opt_int(None, "--n", help="Training samples (default: all / 10000 synthetic).", lo=2, hi=MAX_SAMPLES)
_BATCH = opt_int(256, "--batch-size", help="Global batch size (split over torchrun processes).", lo=1,
                 hi=MAX_BATCH)
_HIDDEN = opt_int(256, "--hidden", help="MLP width.", lo=1, hi=MAX_WIDTH)


def _check_mlp_size(hidden: int, depth: int) -> None:
    """Refuse an MLP too large to build (two hidden x hidden matrices per residual block)."""
    from latentgeo.errors import LatentgeoError

    params = 2 * depth * hidden * (hidden + 1) + 4 * hidden * (hidden + 1)
    if params > MAX_MLP_PARAMS:
        raise LatentgeoError(f"--hidden {hidden} --depth {depth} make an MLP of about {params / 1e9:.1f} billion "
                             f"parameters ({params * 4 / 2 ** 30:.0f} GiB of weights, 4x that with Adam); use a "
                             "smaller --hidden or --depth")


def _check_out_kind(out: str, kind: str) -> None:
    """Refuse an --out folder that holds a run of another kind (its record would be overwritten)."""
    from latentgeo.autoencoders.training import run_folder_kind
    from latentgeo.errors import LatentgeoError

    have = run_folder_kind(out)
    if have == "autoencoder":
        raise LatentgeoError(f"--out '{out}' holds an autoencoder (`latentgeo train ae`), not a {kind} run; choose "
                             "another --out (pass the autoencoder as --encoder to train in its latent space)")
    if have in ("diffusion", "flow") and have != kind:
        raise LatentgeoError(f"--out '{out}' holds a {have} run, not a {kind} run; choose another --out")


_AE_HINT = "the --out folder of `latentgeo train ae`, a diffusers VAE folder"
_ENCODER_HELP = {"subfolder": "Component of a diffusers pipeline folder given as --encoder (default: vae/).",
                 "code": "module:factory -- your own encoder x -> z, built by your Python code (instead of "
                         "--encoder; imported only because you name it here)."}


def _training_data(data: Optional[str], n: Optional[int], seed: int, pad: Optional[bool], encoder: Optional[str],
                   model_opts=None, device: str = "cpu"):
    """The training array and what to record about it: the data itself, or its latents under the encoder
    ``encoder`` (any spec :func:`latentgeo.resolve.resolve_encoder` takes, or ``--code``): a latentgeo autoencoder's
    normalised latents ``z = C (T(x) - m)`` ``[N, d]``, a diffusers VAE's scaled latents ``[N, c, h, w]``. The
    data are checked against the encoder (:func:`latentgeo.resolve.check_input_shape`) before anything is encoded;
    the run records the encoder's spec (``latent_of``), which ``latentgeo sample`` resolves back to decode."""
    import torch

    from latentgeo.cli._options import check_model_path, model_kind, precheck_input, read_json_file, resolve_model
    from latentgeo.data import load
    from latentgeo.errors import LatentgeoError
    from latentgeo.resolve import check_input_shape

    code = model_opts.code if model_opts is not None else None
    if encoder is None and code is None:
        if data is None:
            raise LatentgeoError("no data given; pass --data NAME (see `latentgeo data list`) or a .npy/.npz path")
        x = load(data, split="train", n=n, seed=seed, pad=bool(pad))
        if x.ndim == 3:  # [N, H, W] arrays: one channel
            x = x[:, None]
        return x, {"data": data, "image": x.ndim == 4}
    from latentgeo.autoencoders import encode_batched

    meta = {}
    check_model_path(encoder, "--encoder", _AE_HINT)
    ours = encoder is not None and model_kind(encoder) == "latentgeo"
    if ours:
        from latentgeo.autoencoders.training import check_autoencoder_dir

        d = check_autoencoder_dir(encoder, "--encoder")
        meta = (read_json_file(d / "autoencoder.json", "re-train the autoencoder with `latentgeo train ae` (new "
                                                       "--out), or delete the file and pass --data NAME")
                if (d / "autoencoder.json").exists() else {})
        data = data or meta.get("data")
        if data is None:
            raise LatentgeoError(f"no data set is recorded with the encoder in '{encoder}'; pass --data NAME")
    elif data is None:
        raise LatentgeoError(f"no data given for {'--code ' + code if code else repr(encoder)}; pass --data NAME (the "
                             "images to encode; see `latentgeo data list`)")
    if not ours:  # data vs a diffusers VAE's config first: a channel mismatch fails before the model is loaded
        x = load(data, split="train", n=n, seed=seed, pad=bool(pad))
        x = x[:, None] if x.ndim == 3 else x
        precheck_input(encoder, tuple(x.shape[1:]), model_opts)
    enc, _, info = resolve_model("encoder", encoder, model_opts, device=device, what="--encoder", hint=_AE_HINT)
    if ours:
        if pad is None:  # the encoder's input size tells whether its images were padded to 32x32
            pad = len(enc.in_shape) == 3 and enc.in_shape[-1] == 32
        x = load(data, split="train", n=n, seed=seed, pad=bool(pad))
        x = x[:, None] if x.ndim == 3 else x
        if x[0].numel() != int(torch.tensor(enc.in_shape).prod()):
            raise LatentgeoError(f"'{data}' samples have shape {list(x.shape[1:])} but the encoder in '{encoder}' "
                                 f"takes {list(enc.in_shape)}; pass the --data (and --pad) it was trained on")
        x = x.reshape(x.shape[0], *enc.in_shape)
    try:
        check_input_shape(enc, tuple(x.shape[1:]))
    except LatentgeoError as exc:
        raise LatentgeoError(f"--encoder: {exc}") from None
    _range_note(x, info, data)
    with torch.no_grad():
        z = encode_batched(enc, x, batch_size=500 if ours else 32).float()
    rec = {"data": data, "image": z.ndim == 4, "latent_of": info.get("spec"), "encoder_source": info.get("source"),
           "method": meta.get("method"), "decoded_shape": list(x.shape[1:])}
    if code is not None:
        rec["latent_code"] = code  # informational only: nothing read from a record is ever imported
    return z, rec


def _range_note(x, info: dict, data: str) -> None:
    """A note (stdout) when the data lie outside the value range the encoder expects (diffusers VAEs: [-1, 1])."""
    rng = info.get("input_range")
    if not rng:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < rng[0] - 1e-3 or hi > rng[1] + 1e-3:
        typer.echo(f"note: '{data}' has values in [{lo:.3g}, {hi:.3g}] but the {info.get('class', 'encoder')} "
                   f"expects images in [{rng[0]:g}, {rng[1]:g}]; rescale them (latentgeo loads 8-bit images into "
                   "[-1, 1])")


@model_spec_options("encoder", help=_ENCODER_HELP)
def train_diffusion(
    data: Optional[str] = typer.Option(None, "--data", help="Data set name (see `latentgeo data list`) or a .npy/.npz "
                                                            "path (first array, or key `x`); with --encoder, "
                                                            "default: the encoder's data."),
    out: str = opt_out_dir(..., "--out", help="Output folder (config.json, metrics.jsonl, checkpoints)."),
    net: str = typer.Option("mlp", "--net", help="mlp | unet (unet needs images [N, C, H, W])."),
    steps: int = opt_int(10000, "--steps", help="Total optimiser steps.", lo=1, hi=MAX_STEPS),
    batch_size: int = _BATCH,
    lr: float = _LR,
    seed: int = _SEED,
    n: Optional[int] = _N,
    hidden: int = _HIDDEN,
    depth: int = opt_int(4, "--depth", help="MLP residual blocks.", lo=0, hi=MAX_DEPTH),
    base: int = opt_int(32, "--base", help="U-Net channels at the first level.", lo=1, hi=MAX_BASE),
    periodic: bool = typer.Option(False, "--periodic", help="MLP: sin/cos input embedding (angle data)."),
    ema: float = _EMA,
    grad_clip: float = opt_float(1.0, "--grad-clip", help="Clip the gradient norm (0 disables).", lo=0),
    pad: Optional[bool] = _PAD,
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Train in the latent space of this encoder "
                                                                  "(latent diffusion): a `latentgeo train ae` folder "
                                                                  "(normalised latents) or a diffusers VAE / "
                                                                  "pipeline folder (scaled latents [c, h, w])."),
    device: str = _DEVICE,
    log_every: int = _LOG_EVERY,
    ckpt_every: int = _CKPT_EVERY,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
    model_opts: ModelOptions = None,
) -> None:
    """Train an EDM denoiser (sigma_data estimated from the data) on data or, with --encoder, on an encoder's
    latents. Multi-GPU: `torchrun --nproc_per_node=K -m latentgeo train diffusion ...`."""
    from latentgeo.cli._options import model_kind
    from latentgeo.diffusion import train_denoiser
    from latentgeo.errors import LatentgeoError, check_choice
    from latentgeo.train import resolve_device

    check_choice(net, ["mlp", "unet"], "net")
    if net == "unet" and encoder is not None and model_kind(encoder) == "latentgeo":
        raise LatentgeoError("--net unet needs images [N, C, H, W] but the latents of a `latentgeo train ae` "
                             "--encoder are vectors [N, d]; use --net mlp")
    if net == "mlp":
        _check_mlp_size(hidden, depth)
    _check_out_kind(out, "diffusion")
    x, info = _training_data(data, n, seed, pad, encoder, model_opts, str(resolve_device(device)))
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


@model_spec_options("encoder", help=_ENCODER_HELP)
def train_flow(
    data: Optional[str] = typer.Option(None, "--data", help="Data set name or .npy/.npz path; with --encoder, "
                                                            "default: the encoder's data."),
    out: str = opt_out_dir(..., "--out", help="Output folder (config.json, metrics.jsonl, checkpoints)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Train in the latent space of this encoder "
                                                                  "(latent generation): a `latentgeo train ae` "
                                                                  "folder or a diffusers VAE / pipeline folder."),
    coupling: str = typer.Option("independent", "--coupling", help="independent | ot (exact minibatch OT pairs: "
                                                                   "straighter paths, fewer ODE steps)."),
    steps: int = opt_int(5000, "--steps", help="Total optimiser steps.", lo=1, hi=MAX_STEPS),
    batch_size: int = _BATCH,
    lr: float = _LR,
    seed: int = _SEED,
    n: Optional[int] = opt_int(None, "--n", help="Training samples (default: all).", lo=2, hi=MAX_SAMPLES),
    hidden: int = _HIDDEN,
    depth: int = opt_int(4, "--depth", help="MLP residual blocks.", lo=1, hi=MAX_DEPTH),
    ema: float = _EMA,
    pad: Optional[bool] = _PAD,
    device: str = _DEVICE,
    log_every: int = _LOG_EVERY,
    ckpt_every: int = _CKPT_EVERY,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
    model_opts: ModelOptions = None,
) -> None:
    """Train a flow-matching model from N(0, I) to the data or, with --encoder, to an encoder's normalised latents
    (sample and decode with `latentgeo sample OUT`)."""
    import math

    from latentgeo.errors import check_choice
    from latentgeo.flows import fit_flow

    from latentgeo.train import resolve_device

    check_choice(coupling, ["independent", "ot"], "--coupling")
    _check_mlp_size(hidden, depth)
    _check_out_kind(out, "flow")
    x, info = _training_data(data, n, seed, pad, encoder, model_opts, str(resolve_device(device)))
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


_TRAIN_CMDS = "pass the --out folder of `latentgeo train diffusion` or `latentgeo train flow`"


def _sample_run(run: str):
    """``(folder, user config)`` of the diffusion / flow run ``run``, or one line saying what it is instead."""
    from pathlib import Path

    from latentgeo.autoencoders.training import run_folder_kind
    from latentgeo.cli._options import read_json_file
    from latentgeo.errors import LatentgeoError

    runp = Path(run)
    if not runp.exists():
        raise LatentgeoError(f"'{run}' does not exist; {_TRAIN_CMDS}")
    if not runp.is_dir():
        raise LatentgeoError(f"'{run}' is a file, not a training folder; {_TRAIN_CMDS}")
    ae_msg = (f"'{run}' is an autoencoder folder (`latentgeo train ae`), not a diffusion or flow run; train one in "
              f"its latent space with `latentgeo train flow --encoder {run} --out RUN` (or `train diffusion`) and "
              "sample RUN")
    cfg_file = runp / "config.json"
    if not cfg_file.exists():
        if run_folder_kind(runp) == "autoencoder":
            raise LatentgeoError(ae_msg)
        raise LatentgeoError(f"'{run}' is not a latentgeo training folder (it has no config.json); {_TRAIN_CMDS}")
    cfg = read_json_file(cfg_file, "the run cannot be sampled without its record; train it again into a new --out")
    if cfg.get("kind") == "autoencoder" or (runp / "encoder.safetensors").exists():
        raise LatentgeoError(ae_msg)
    user = cfg.get("user") if isinstance(cfg.get("user"), dict) else {}
    shape = user.get("data_shape")
    if shape is None:
        cls = cfg.get("model_class")
        what = f" (it is a {cls} training run)" if cls else ""
        raise LatentgeoError(f"'{cfg_file}' records no diffusion or flow model{what}; {_TRAIN_CMDS}")
    if not (isinstance(shape, list) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
        raise LatentgeoError(f"'{cfg_file}' records a damaged data shape {shape!r}; train the run again into a new "
                             "--out")
    return runp, user


def _parse_shape(text: Optional[str]):
    from latentgeo.errors import LatentgeoError

    if text is None:
        return None
    try:
        v = [int(t) for t in str(text).replace(" ", "").replace("x", ",").split(",") if t]
    except ValueError:
        v = []
    if not v or len(v) > 4 or any(i < 1 or i > MAX_WIDTH for i in v):
        raise LatentgeoError(f"--shape must be 1 to 4 positive integers (one sample, no batch axis), got '{text}'; "
                             "pass e.g. --shape 3,32,32")
    return v


@model_spec_options("model")
def sample_cmd(
    run: Optional[str] = typer.Argument(None, help="The model: a `latentgeo train diffusion` / `train flow` folder, "
                                                   "a diffusers pipeline / UNet folder, a TorchScript file with "
                                                   "--parametrization, ... (or use --code instead)."),
    n: int = opt_int(64, "--n", help="Number of samples (written in batches of --batch-size).", lo=1,
                     hi=MAX_SAMPLES),
    steps: int = opt_int(32, "--steps", help="Sampler steps (diffusion: rho = 7 schedule, sigma from min(80, the "
                                             "model's sigma_max) to max(0.002, its sigma_min); flow: uniform in t).",
                         lo=1, hi=MAX_SAMPLER_STEPS),
    sampler: str = typer.Option("heun", "--sampler", help="diffusion: heun | euler | euler_maruyama | "
                                                          "edm_stochastic; flow: heun | euler | dopri5 | rk4."),
    autoencoder: Optional[str] = typer.Option(None, "--autoencoder", help="Latent runs: decode with this encoder's "
                                                                          "decoder (a `train ae` folder or a "
                                                                          "diffusers VAE folder; default: the one "
                                                                          "recorded at training)."),
    seed: int = _SEED,
    out: Optional[str] = opt_out_file(None, "--out", help="Output .npz (default RUN/samples.npz for latentgeo runs; "
                                                          "PNG beside it)."),
    batch_size: int = opt_int(1024, "--batch-size", help="Samples per sampler call.", lo=1, hi=MAX_BATCH),
    device: str = _DEVICE,
    raw: bool = typer.Option(False, "--raw", help="Use the raw weights instead of the EMA weights."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Shape of one sample, e.g. 3,32,32, for models that "
                                                              "record none (TorchScript, --code)."),
    model_opts: ModelOptions = None,
) -> None:
    """Draw samples from a trained denoiser or flow: writes samples.npz (key `x`; latent runs are decoded, with the
    latents under key `z`) and, for images or 2-D points, a PNG."""
    import math
    import shutil
    from pathlib import Path

    import torch

    from latentgeo.checkpoint import atomic_write_bytes
    from latentgeo.cli._options import default_out, model_kind, model_range, resolve_model
    from latentgeo.diffusion import SAMPLERS, sample
    from latentgeo.errors import LatentgeoError, check_choice
    from latentgeo.flows import FLOW_METHODS, flow_sample
    from latentgeo.resolve import ACCEPTED
    from latentgeo.runfolder import check_output_file
    from latentgeo.train import resolve_device

    want_shape = _parse_shape(shape)
    if run is None and model_opts.code is None:
        raise LatentgeoError(f"no model given; {_TRAIN_CMDS} as RUN, or another model ({ACCEPTED})")
    kind = model_kind(run) if run is not None else "code"
    if kind == "missing":
        raise LatentgeoError(f"'{run}' does not exist; {_TRAIN_CMDS}, or another model: {ACCEPTED}")
    ours = kind == "latentgeo" and Path(run).is_dir()
    user: dict = {}
    if ours:
        runp, user = _sample_run(run)
        data_shape = list(user["data_shape"])
        is_flow = user.get("kind") == "flow"
    else:
        data_shape = want_shape
        is_flow = model_opts.parametrization in ("velocity", "rectified_flow", "velocity_latentgeo")
    if want_shape is not None and ours and want_shape != data_shape:
        raise LatentgeoError(f"--shape {want_shape} differs from the shape {data_shape} the run was trained on; "
                             "drop --shape")
    check_choice(sampler, list(FLOW_METHODS if is_flow else SAMPLERS), "flow ODE method" if is_flow else "sampler")
    dest = default_out(run, "samples.npz", out)
    if dest.suffix != ".npz":
        dest = dest.with_suffix(".npz")
    check_output_file(dest, "--out")
    # the decoder of a latent run: --autoencoder, else the encoder spec recorded at training (never --code, and
    # nothing in the record is run as code)
    ae_spec = autoencoder if autoencoder is not None else user.get("latent_of")
    recorded = autoencoder is None and ae_spec is not None
    if recorded:
        p = ae_spec if isinstance(ae_spec, str) else ae_spec.get("path") if isinstance(ae_spec, dict) else None
        if not isinstance(p, str) or not Path(p).exists():
            raise LatentgeoError(f"the autoencoder '{p}' recorded by this latent run is missing; pass --autoencoder "
                                 "SPEC (the `latentgeo train ae` folder or diffusers VAE it was trained on)")
    dev = resolve_device(device)
    dec = None
    if ae_spec is not None:  # a latent run: decode the latents with the encoder's decoder, batch by batch
        what = "--autoencoder" if autoencoder is not None else f"latent_of in {runp / 'config.json'}"
        # a recorded path is loaded only as a latentgeo / diffusers safetensors model (no TorchScript, pickle, code)
        _, dec, _ = resolve_model("encoder", ae_spec, model_opts, code=False, recorded=recorded, device=dev,
                                  what=what, hint=None if recorded else _AE_HINT)
        if dec is None:
            raise LatentgeoError(f"{what} '{ae_spec if isinstance(ae_spec, str) else ae_spec.get('path')}' has no "
                                 "decoder; pass --autoencoder SPEC with one (a `latentgeo train ae` folder or a "
                                 "diffusers VAE)")
    elif user.get("latent_code"):
        typer.echo(f"note: this latent run was trained on the encoder of --code {user['latent_code']}, which "
                   "latentgeo never runs from a run's record; writing the latents (pass --autoencoder SPEC to "
                   "decode)")
    dec_shape = list(user.get("decoded_shape") or []) if dec is not None else []

    def check_disk(shape_):
        # Output size: refuse before sampling when the disk cannot hold it (arrays are written in batches to
        # temporary files beside --out, then zipped into place, so up to twice the size is needed for a moment).
        nbytes = 4 * n * (math.prod(shape_) + (math.prod(dec_shape) if dec_shape else 0))
        anc = dest.parent
        while not anc.exists() and anc.parent != anc:
            anc = anc.parent
        free = shutil.disk_usage(anc).free
        if 2 * nbytes + (64 << 20) > free:
            raise LatentgeoError(f"--n {n} samples need about {2 * nbytes / 2 ** 30:.2f} GiB of disk while written "
                                 f"but '{anc}' has {free / 2 ** 30:.2f} GiB free; pass a smaller --n or another --out")

    if data_shape is not None:
        check_disk(data_shape)  # before the model is loaded
    role = "flow" if is_flow else "denoiser"
    model = resolve_model(role, run, model_opts, device=dev, what="RUN" if run is not None else "--code",
                          ema=not raw)
    if data_shape is None:
        data_shape = (getattr(model, "info", None) or {}).get("sample_shape")
        if not data_shape:
            raise LatentgeoError("the model records no sample shape; pass --shape (e.g. --shape 3,32,32)")
        data_shape = list(data_shape)
        check_disk(data_shape)
    lo, hi = model_range(model)
    s_lo, s_hi = max(0.002, lo), min(80.0, hi)
    if not is_flow and not s_lo < s_hi:
        raise LatentgeoError(f"the model's noise range [{lo:.4g}, {hi:.4g}] leaves no sampling schedule; check the "
                             "model's schedule (--schedule)")
    clamp = dec is not None and len(dec_shape) == 3
    g = torch.Generator(dev).manual_seed(seed)
    p_dec = next(dec.parameters(), None) if isinstance(dec, torch.nn.Module) else None
    if dec is not None:  # the decoder must take latents of the model's shape: find out now, not after sampling
        try:
            with torch.no_grad():
                dec(torch.zeros((1, *data_shape), device=dev, dtype=p_dec.dtype if p_dec is not None else None))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise LatentgeoError(f"{what} cannot decode latents of shape {list(data_shape)} that this model samples "
                                 f"({type(exc).__name__}: {first}); pass --autoencoder with the autoencoder the run "
                                 "was trained on") from None

    def batches():
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            if is_flow:
                z0 = torch.randn((b, *data_shape), generator=g, device=dev)
                s = flow_sample(model, z0, steps=steps, method=sampler)
            else:
                s = sample(model, (b, *data_shape), n_steps=steps, sampler=sampler, generator=g, device=dev,
                           sigma_min=s_lo, sigma_max=s_hi)
            if dec is None:
                yield {"x": s.cpu()}
                continue
            with torch.no_grad():
                zs = s.to(device=dev, dtype=p_dec.dtype) if p_dec is not None else s
                xd = dec(zs).float().cpu()
            yield {"x": xd.clamp(-1, 1) if clamp else xd, "z": s.cpu()}

    preview = _write_npz_stream(dest, n, batches(), progress=not quiet)
    x = preview["x"]
    out_shape = tuple(x.shape[1:])
    msg = (f"wrote {n} samples of shape {out_shape} to {dest}"
           + (" (decoded; latents under `z`)" if dec is not None else ""))
    png = _png(x)
    if png is not None:
        atomic_write_bytes(dest.with_suffix(".png"), png)
        msg += f" and {dest.with_suffix('.png')}"
    typer.echo(msg)


#: Samples kept in memory for the PNG (the npz gets all of them).
_PREVIEW = 20_000


def _write_npz_stream(dest, n: int, batches, progress: bool = True) -> dict:
    """Write the arrays of ``batches`` (dicts of ``[b, ...]`` tensors adding up to ``n`` rows per key) to the .npz
    ``dest`` without holding them in memory: each array goes to a memory-mapped temporary ``.npy`` beside
    ``dest``, then they are stored (uncompressed, zip64, as ``np.savez`` does) into a temporary zip that
    replaces ``dest`` atomically. An interrupted run leaves ``dest`` as it was. Returns the first
    :data:`_PREVIEW` rows of each array."""
    import os
    import sys
    import tempfile
    import zipfile
    from pathlib import Path

    import numpy as np
    from numpy.lib import format as npf

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmps: list = []

    def tmp(suffix: str) -> str:
        fd, path = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=f"{suffix}.tmp")
        os.close(fd)
        tmps.append(path)
        return path

    maps: dict = {}
    preview: dict = {}
    bar = None
    if progress and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[bold]sampling", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "ETA",
                       TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("sampling", total=n)
        i = 0
        for part in batches:
            b = None
            for key, t in part.items():
                a = t.detach().numpy()
                b = a.shape[0]
                if key not in maps:
                    maps[key] = npf.open_memmap(tmp(f".{key}.npy"), mode="w+", dtype=a.dtype, shape=(n, *a.shape[1:]))
                maps[key][i:i + b] = a
                if i < _PREVIEW:
                    preview.setdefault(key, []).append(a[:_PREVIEW - i])
            i += b or 0
            if bar is not None:
                bar.update(task, completed=i)
        files = {}
        for key, mm in maps.items():
            mm.flush()
            files[key] = mm.filename
            del mm
        maps.clear()
        zpath = tmp(".zip")
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, f in files.items():
                zf.write(f, arcname=f"{key}.npy")
        with open(zpath, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(zpath, 0o666 & ~_umask())
        os.replace(zpath, dest)
        tmps.remove(zpath)
    finally:
        if bar is not None:
            bar.stop()
        maps.clear()
        for f in tmps:
            try:
                os.unlink(f)
            except OSError:
                pass
    return {k: np.concatenate(v) for k, v in preview.items()}


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
