"""CLI commands of the spacetime area: ``geodesic``, ``diffed`` and ``spacetime-demo``.

RUN is any model :func:`latentgeo.resolve.resolve_denoiser` takes: a training folder written by ``latentgeo train
diffusion`` (its ``config.json`` records the data shape and data set), a diffusers pipeline / UNet folder (the data
shape comes from the UNet's config), a TorchScript file with ``--parametrization``, or ``--code module:factory``
instead of RUN. Outputs go to ``RUN/geodesic`` (``RUN/diffed``) for latentgeo runs, else to ``--out``.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from latentgeo.cli._options import (MAX_SAMPLES, MAX_STEPS, ModelOptions, check_sigmas, model_spec_options, opt_device,
                                    opt_float, opt_int, opt_out_dir, opt_seed)

#: Curve points / spline knots / probes beyond these are typos (they only end in out-of-memory crashes).
MAX_POINTS = 100_000
MAX_NODES = 4096
MAX_PROBES = 4096
#: Noise levels above this are typos (EDM's sigma_max is 80).
SIGMA_HI = 1e5


def _ints(text: str, name: str, lo: int = 1, hi: Optional[int] = None) -> List[int]:
    from latentgeo.errors import LatentgeoError

    try:
        v = [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise LatentgeoError(f"{name} must be an integer or a comma list like 16,64; got '{text}'") from None
    if not v or any(i < lo for i in v):
        raise LatentgeoError(f"{name} must hold integers >= {lo}, got '{text}'; pass values of {lo} or more")
    if hi is not None and any(i > hi for i in v):
        raise LatentgeoError(f"{name} must hold integers <= {hi:,}, got '{text}'; use smaller values")
    return v


def _probes(text: str, allow_auto: bool = False, name: str = "--probes"):
    from latentgeo.errors import LatentgeoError

    if str(text).lower() in ("exact", "none"):
        return None
    if allow_auto and str(text).lower() == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        k = 0
    alt = "'exact' or 'auto'" if allow_auto else "'exact'"
    if k < 1:
        raise LatentgeoError(f"{name} must be a positive integer or {alt}, got '{text}'; pass e.g. {name} 4")
    if k > MAX_PROBES:
        raise LatentgeoError(f"{name} must be <= {MAX_PROBES} (or {alt}), got {k}; pass fewer probes")
    return k


def _schedule(n_points: str, steps: str):
    """``(points, steps)`` lists of a coarse-to-fine schedule, checked."""
    from latentgeo.errors import LatentgeoError

    pts = _ints(n_points, "--n-points", lo=2, hi=MAX_POINTS)
    sts = _ints(steps, "--steps", lo=1, hi=MAX_STEPS)
    if len(sts) == 1:
        sts = sts * len(pts)
    if len(pts) != len(sts):
        raise LatentgeoError(f"--n-points {n_points} and --steps {steps} need the same number of entries; give "
                             "both one entry per stage (or one --steps for all)")
    return pts, sts


_RUN_HELP = ("The model: a `latentgeo train diffusion` folder, a diffusers pipeline / UNet folder, a TorchScript "
             "file with --parametrization, ... (or use --code instead).")


def _check_run(run: Optional[str], model_opts=None):
    """The run's recorded user config (a latentgeo run's ``config.json``; ``{}`` for other models), read BEFORE any
    model is loaded."""
    from pathlib import Path

    from latentgeo.cli._options import model_kind, read_json_file
    from latentgeo.errors import LatentgeoError
    from latentgeo.resolve import ACCEPTED

    if run is None:
        if model_opts is None or model_opts.code is None:
            raise LatentgeoError(f"no model given; pass RUN ({ACCEPTED})")
        return {}
    p = Path(run)
    if not p.exists():
        raise LatentgeoError(f"'{run}' does not exist; pass {ACCEPTED}")
    if not p.is_dir() or model_kind(p) != "latentgeo":
        return {}
    cfg = p / "config.json"
    if not cfg.exists():
        return {}
    rec = read_json_file(cfg, fix="restore it or train the run again with `latentgeo train diffusion`")
    user = rec.get("user", {}) or {}
    return user if isinstance(user, dict) else {}


def _load_run(run: Optional[str], device: str = "cpu", model_opts=None):
    """(denoiser, user config dict, data shape or None) of the model ``run`` (see :func:`_check_run`)."""
    from latentgeo.cli._options import resolve_model

    user = _check_run(run, model_opts)
    den = resolve_model("denoiser", run, model_opts, device=device, what="RUN" if run is not None else "--code")
    shape = user.get("data_shape") or (getattr(den, "info", None) or {}).get("sample_shape")
    return den, user, (list(shape) if shape else None)


def _device(device: str) -> str:
    from latentgeo.train.loop import resolve_device

    return str(resolve_device(device))


def _dest(out: Optional[str], run: Optional[str], sub: str):
    """The output folder (``--out``, or ``RUN/<sub>`` for a latentgeo run folder), checked before any work."""
    from latentgeo.cli._options import default_out
    from latentgeo.runfolder import check_output_dir

    dest = default_out(run, sub, out)
    check_output_dir(dest, "--out" if out else f"default --out (RUN/{sub})")
    return dest


def _encode_start(den) -> float:
    """Where the PF-ODE encoding starts: 0.002, or the model's smallest trained noise level if above."""
    from latentgeo.cli._options import model_range

    return max(0.002, model_range(den)[0])


def _sigma_opt(default: float, name: str, help: str):
    return opt_float(default, name, help=help, lo=0, lo_open=True, hi=SIGMA_HI)


def _point(text: str, shape, what: str, data=None):
    """A data point from '--from' text: comma-separated coordinates, or an integer index into ``data``."""
    import math

    import torch

    from latentgeo.errors import LatentgeoError

    t = str(text).strip()
    if data is not None:
        try:
            i = int(t)
        except ValueError:
            raise LatentgeoError(f"with --data, {what} must be a sample index (integer), got '{text}'; pass e.g. "
                                 f"{what} 0")
        if not 0 <= i < data.shape[0]:
            raise LatentgeoError(f"{what} index {i} is out of range for {data.shape[0]} samples; "
                                 f"pass 0..{data.shape[0] - 1}")
        return data[i].double()
    try:
        v = [float(c) for c in t.replace(" ", "").split(",") if c]
    except ValueError:
        raise LatentgeoError(f"{what} must be comma-separated numbers like '0.5,-1.2' (or an index with --data), "
                             f"got '{text}'; write the coordinates as numbers separated by commas") from None
    if not v:
        raise LatentgeoError(f"{what} is empty; pass comma-separated coordinates like '0.5,-1.2'")
    for c in v:
        if not math.isfinite(c):
            raise LatentgeoError(f"{what} has a non-finite coordinate ({c}) in '{text}'; pass finite numbers")
    n = int(math.prod(shape)) if shape else len(v)
    if len(v) != n:
        raise LatentgeoError(f"{what} has {len(v)} coordinates but the model's data have {n}; "
                             "pass all coordinates, or use --data NAME with a sample index")
    return torch.tensor(v, dtype=torch.float64).reshape(tuple(shape) if shape else (n,))


_ENCODER_HELP = ("A latentgeo autoencoder run folder (`latentgeo train ae`, with its decoder): RUN is then a latent "
                 "diffusion model of its normalised latents (`latentgeo train diffusion --encoder AE`); images are "
                 "encoded, the geodesics run in the latent spacetime and are decoded.")


def _load_encoder(encoder: str, user: dict, run, device: str, data: str, split: str, model_opts=None):
    """``(images x [N, ...], enc dict)`` for ``--encoder``: the data loaded in the encoder's input shape (padded to
    32x32 when it was trained so) and ``{"path", "encode", "decode", "latent_shape", "info"}``; refuses a RUN not
    trained on this encoder's latents (:func:`latentgeo.spacetime.latent.check_latent_model`)."""
    from pathlib import Path

    from latentgeo.data import load
    from latentgeo.errors import LatentgeoError
    from latentgeo.cli._options import ModelOptions, resolve_model
    from latentgeo.resolve import check_input_shape
    from latentgeo.spacetime.latent import check_latent_model

    if not Path(encoder).expanduser().exists():
        raise LatentgeoError(f"--encoder '{encoder}' does not exist; pass a `latentgeo train ae` folder")
    check_latent_model(user, encoder, user.get("data_shape") or [], run=str(run))  # recorded path, before loading
    # the one resolver; of the command's model options only the allow flags apply to the autoencoder (--subfolder,
    # --parametrization, ... describe RUN)
    opts = ModelOptions(allow_pickle=bool(getattr(model_opts, "allow_pickle", False)),
                        allow_torchscript=bool(getattr(model_opts, "allow_torchscript", False)))
    enc, dec, info = resolve_model("encoder", encoder, opts, code=False, device=device, what="--encoder")
    if dec is None:
        raise LatentgeoError(f"--encoder '{encoder}' has no decoder, so the geodesic cannot be decoded; pass an "
                             "autoencoder folder with decoder.safetensors (`latentgeo train ae` trains both)")
    in_shape = list(getattr(enc, "in_shape", []) or [])
    pad = len(in_shape) == 3 and in_shape[-1] == 32
    x = load(data, split=split, pad=pad)
    x = x[:, None] if x.ndim == 3 else x
    if in_shape:
        import math

        if x[0].numel() != math.prod(in_shape):
            raise LatentgeoError(f"'{data}' samples have shape {list(x.shape[1:])} but the encoder takes {in_shape}; "
                                 "pass the data set it was trained on")
        x = x.reshape(x.shape[0], *in_shape)
    try:
        lat = check_input_shape(enc, tuple(x.shape[1:]))
    except LatentgeoError as exc:
        raise LatentgeoError(f"--encoder: {exc}") from None
    check_latent_model(user, encoder, lat, run=str(run))
    p0 = next(enc.parameters(), None) if hasattr(enc, "parameters") else None
    edt = p0.dtype if p0 is not None else x.dtype

    def encode(v):
        from latentgeo.spacetime.latent import encode_latents

        return encode_latents(enc, v.to(edt))

    return x, {"path": str(Path(encoder).expanduser().resolve()), "encode": encode, "decode": dec,
               "encoder": enc, "latent_shape": list(lat), "info": info}


@model_spec_options("denoiser")
def geodesic_cmd(
    run: Optional[str] = typer.Argument(None, help=_RUN_HELP),
    from_: str = typer.Option(..., "--from", help="Start point: comma-separated coordinates, or a sample index "
                                                  "with --data."),
    to: str = typer.Option(..., "--to", help="End point (same format as --from)."),
    sigma_from: float = _sigma_opt(0.1, "--sigma-from", help="Noise level of the start point (> 0)."),
    sigma_to: float = _sigma_opt(0.1, "--sigma-to", help="Noise level of the end point (> 0)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set: --from/--to are then sample indices."),
    split: str = typer.Option("test", "--split", help="Split of --data (train | test)."),
    encode: bool = typer.Option(False, "--encode", help="PF-ODE-encode the clean points to their sigmas first."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP + " Needs --data."),
    n_points: str = typer.Option("64", "--n-points", help="Curve points (>= 2); a list like 16,64 = "
                                                                 "coarse-to-fine."),
    steps: str = typer.Option("500", "--steps", help="Adam steps (a list matching --n-points)."),
    n_nodes: int = opt_int(8, "--n-nodes", help="Interior spline knots.", lo=1, hi=MAX_NODES),
    lr: float = opt_float(0.1, "--lr", help="Adam learning rate (> 0).", lo=0, lo_open=True, hi=1e3),
    probes: str = typer.Option("1", "--probes", help="Rademacher probes per point, or 'exact' (low dimensions)."),
    eval_probes: str = typer.Option("auto", "--eval-probes", help="Probes for the reported energy/length: an integer, "
                                    "'exact', or 'auto' (exact up to 16 dimensions, else 16 probes)."),
    chunk_size: int = opt_int(0, "--chunk-size", help="Denoiser calls on at most this many points (0 = all; "
                                                      "images: 16).", lo=0, hi=MAX_SAMPLES),
    seed: int = opt_seed(),
    out: Optional[str] = opt_out_dir(None, "--out", help="Output folder (default RUN/geodesic)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    device: str = opt_device(),
    model_opts: ModelOptions = None,
) -> None:
    """Spacetime geodesic between two points: writes geodesic.json (curve, energy, length, history) and a PNG."""
    import torch

    from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json
    from latentgeo.errors import LatentgeoError, check_choice, check_positive
    from latentgeo.spacetime.diffed import _multires, encode_to_sigma
    from latentgeo.spacetime.plots import curve_png, image_strip_png

    check_positive(sigma_from, "--sigma-from")
    check_positive(sigma_to, "--sigma-to")
    check_positive(lr, "--lr")
    check_choice(split, ["train", "test"], "split")
    pts, sts = _schedule(n_points, steps)
    k, ek = _probes(probes), _probes(eval_probes, allow_auto=True, name="--eval-probes")
    _check_run(run, model_opts)
    dest = _dest(out, run, "geodesic")
    dev = _device(device)
    den, user, shape = _load_run(run, dev, model_opts)
    check_sigmas(den, {"--sigma-from": sigma_from, "--sigma-to": sigma_to}, model_opts.extrapolate)
    start = _encode_start(den)
    if encode and (not sigma_from > start or not sigma_to > start):
        raise LatentgeoError(f"--encode needs --sigma-from and --sigma-to above {start:.4g} (the PF-ODE starts there: "
                             "max(0.002, the model's sigma_min)); raise them or drop --encode")
    if encoder is not None:
        if data is None:
            raise LatentgeoError("--encoder needs --data NAME (--from and --to are then image indices); pass --data")
        _geodesic_latent(den, user, run, model_opts, encoder, dev, data, split, from_, to, sigma_from, sigma_to,
                         encode, start, pts, sts, n_nodes, lr, k, ek, seed, chunk_size, quiet, dest)
        return
    x_data = None
    if data is not None:
        from latentgeo.data import load

        x_data = load(data, split=split)
        if shape is not None and tuple(x_data.shape[1:]) != tuple(shape):
            raise LatentgeoError(f"data set '{data}' has samples of shape {tuple(x_data.shape[1:])} but the model "
                                 f"was trained on {tuple(shape)}; pass the model's data set")
        shape = list(x_data.shape[1:])
    a = _point(from_, shape, "--from", x_data)
    b = _point(to, shape, "--to", x_data)
    p0 = next(den.parameters(), None)
    dt = p0.dtype if p0 is not None else torch.float32
    a, b = a.to(dt), b.to(dt)
    if p0 is not None:
        a, b = a.to(p0.device), b.to(p0.device)
    if encode:
        a = encode_to_sigma(den, a[None], sigma_from, sigma_start=start)[0]
        b = encode_to_sigma(den, b[None], sigma_to, sigma_start=start)[0]
    g = _multires(den, (a, sigma_from), (b, sigma_to), pts, sts, n_nodes=n_nodes, lr=lr, n_probes=k,
                  generator=torch.Generator().manual_seed(seed), progress=not quiet, chunk_size=chunk_size or None,
                  eval_probes=ek)
    dest.mkdir(parents=True, exist_ok=True)
    rec = {"run": str(run) if run is not None else None, "model": getattr(den, "spec", None),
           "code": model_opts.code, "from": from_, "to": to, "sigma_from": sigma_from, "sigma_to": sigma_to,
           "encode": encode, "n_points": pts, "steps": sts, "n_nodes": n_nodes, "lr": lr, "probes": probes,
           "eval_probes": eval_probes, "energy": g.energy, "length": g.length, "negative_fraction": g.negative_fraction,
           "seconds_per_step": g.seconds_per_step,
           "sigmas": g.sigmas.tolist(), "history": g.history}
    if g.xs[0].numel() <= 64:
        rec["xs"] = g.xs.detach().cpu().reshape(g.xs.shape[0], -1).tolist()
    else:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, xs=g.xs.detach().cpu().numpy(), sigmas=g.sigmas.detach().cpu().numpy())
        atomic_write_bytes(dest / "geodesic.npz", buf.getvalue())
    atomic_write_json(dest / "geodesic.json", rec)
    if g.xs.ndim == 4:
        png = image_strip_png(den, g.xs, g.sigmas, title=f"geodesic: length {g.length:.3g}, energy {g.energy:.3g}")
    else:
        if x_data is None and user.get("data") and g.xs[0].numel() <= 3:
            try:  # backdrop of training data for the plot (best effort: the run may name a file that moved)
                from latentgeo.data import load

                x_data = load(user["data"], n=2000)
            except (LatentgeoError, OSError):
                x_data = None
        png = curve_png(g.xs, g.sigmas, title=f"geodesic: length {g.length:.3g}, energy {g.energy:.3g}",
                        data=x_data[:2000] if x_data is not None else None)
    atomic_write_bytes(dest / "geodesic.png", png)
    typer.echo(f"geodesic: length {g.length:.4g}, energy {g.energy:.4g} (straight line {g.history['energy'][0]:.4g}), "
               f"max sigma {float(g.sigmas.max()):.3g}; {g.seconds_per_step * 1e3:.2f} ms/step; wrote {dest}")
    if g.negative_fraction > 0.05:
        typer.echo(f"warning: {100 * g.negative_fraction:.0f}% of the segment mass is negative (probe noise, or the "
                   "denoiser is not a valid posterior mean along the curve); use more --eval-probes or a better-trained "
                   "model", err=True)


def _geodesic_latent(den, user, run, model_opts, encoder, dev, data, split, from_, to, sigma_from, sigma_to, encode,
                     start, pts, sts, n_nodes, lr, k, ek, seed, chunk_size, quiet, dest) -> None:
    """``latentgeo geodesic RUN --encoder AE --data NAME``: the latent geodesic between two images, decoded."""
    import torch

    from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json
    from latentgeo.spacetime.latent import latent_geodesic
    from latentgeo.spacetime.plots import decoded_strip_png

    x, enc = _load_encoder(encoder, user, run, dev, data, split, model_opts)
    a, b = _point(from_, None, "--from", x), _point(to, None, "--to", x)
    lg = latent_geodesic(den, enc["encode"], enc["decode"], a, b, sigma=sigma_from, sigma_b=sigma_to,
                         pf_encode=encode, encode_from=start, n_points=pts, steps=sts, n_nodes=n_nodes, lr=lr,
                         n_probes=k, eval_probes=ek, generator=torch.Generator().manual_seed(seed),
                         progress=not quiet, chunk_size=chunk_size or None)
    g = lg.geodesic
    dest.mkdir(parents=True, exist_ok=True)
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, latents=g.xs.detach().cpu().numpy(), sigmas=g.sigmas.detach().cpu().numpy(),
             images=lg.images.detach().cpu().numpy(), denoised=lg.denoised.detach().cpu().numpy())
    atomic_write_bytes(dest / "geodesic.npz", buf.getvalue())
    rec = {"run": str(run) if run is not None else None, "model": getattr(den, "spec", None), "encoder": enc["path"],
           "space": "latent", "latent_shape": enc["latent_shape"], "data": data, "split": split, "from": from_,
           "to": to, "sigma_from": sigma_from, "sigma_to": sigma_to, "encode": encode, "n_points": pts,
           "steps": sts, "n_nodes": n_nodes, "lr": lr, "energy": g.energy, "length": g.length,
           "negative_fraction": g.negative_fraction, "seconds_per_step": g.seconds_per_step,
           "sigmas": g.sigmas.tolist(), "history": g.history,
           "pixel_euclidean": float((a - b).double().norm()),
           "decoded_endpoint_mse": [float(((lg.images[0] - a.to(lg.images)) ** 2).mean()),
                                    float(((lg.images[-1] - b.to(lg.images)) ** 2).mean())]}
    atomic_write_json(dest / "geodesic.json", rec)
    t = f"latent geodesic: length {g.length:.3g}, energy {g.energy:.3g}"
    atomic_write_bytes(dest / "geodesic.png", decoded_strip_png(lg.images, g.sigmas, title=t + " (decoded curve)"))
    atomic_write_bytes(dest / "geodesic_denoised.png",
                       decoded_strip_png(lg.denoised, g.sigmas, title=t + " (decoded E[z0 | z_t])"))
    typer.echo(f"latent geodesic: length {g.length:.4g}, energy {g.energy:.4g} (straight line "
               f"{g.history['energy'][0]:.4g}) in the latent spacetime of {enc['path']}; decoded strip in {dest}")


#: Images of a matrix beyond this are typos (2,000 images are ~2 million geodesics).
MAX_MATRIX = 2000
#: A warm-start pilot (``warm_start="auto"``: 8 pairs x 100 cold steps) pays off from this many pairs on; fewer pairs
#: start from the built-in profile (:data:`latentgeo.spacetime.diffed.DEFAULT_WARM_PROFILE`).
PILOT_FROM_PAIRS = 200
_PILOT = {"pilot_pairs": 8, "pilot_steps": 100}
#: Default memory bound for images: curve points (denoiser rows, each with its double-backward graph) per call.
IMAGE_MAX_POINTS = 256


def _labels(data: str, split: str, x):
    """Class labels [N] (numpy int64) of a named labelled data set (digits, fashion-mnist), else ``None``."""
    key = str(data).strip().lower().replace("_", "-")
    key = {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)
    try:
        if key == "digits":
            from latentgeo.data import digits

            _, y = digits(split=split, return_labels=True)
        elif key == "fashion-mnist":
            from latentgeo.data import fashion_mnist

            _, y = fashion_mnist(split=split, return_labels=True)
        else:
            return None
    except Exception:  # labels are a bonus: a data set that loads without them is still usable
        return None
    y = y.numpy()
    return y if y.shape[0] == x.shape[0] else None


def _draw(n_total: int, N: int, labels, seed: int):
    """Indices of the first ``N`` of a seeded draw from ``n_total`` samples; class-stratified when ``labels`` exist
    (each class in a random order, then round-robin over the classes, so any prefix is balanced to within one)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if labels is None:
        return rng.permutation(n_total)[:N]
    key = np.empty(n_total)
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        key[m[rng.permutation(m.size)]] = np.arange(m.size)
    key += rng.random(n_total)  # random class order within each round
    return np.argsort(key, kind="stable")[:N]


def _pairwise_dssim(img, batch: int = 4096):
    """1 - SSIM for all pairs of ``img`` [N, C, H, W] -> [N, N] numpy (batches of pairs, bounded memory)."""
    import numpy as np

    from latentgeo.spacetime.compare import ssim

    N = img.shape[0]
    i, j = np.triu_indices(N, 1)
    out = np.zeros((N, N))
    for s in range(0, i.size, batch):
        a, b = i[s:s + batch], j[s:s + batch]
        v = 1.0 - ssim(img[a].double(), img[b].double()).cpu().numpy()
        out[a, b] = out[b, a] = v
    return out


def _matrix_settings_check(dest, settings: dict, fresh: bool) -> None:
    """Refuse (one line naming the option) to resume a matrix in ``dest`` computed with other settings."""
    from latentgeo.cli._options import read_json_file
    from latentgeo.errors import LatentgeoError

    f = dest / "diffed_matrix_settings.json"
    if fresh or not f.exists():
        return
    old = read_json_file(f, fix="delete it or pass --fresh").get("settings", {})
    diff = [k for k in settings if k in old and old[k] != settings[k]]
    diff += [k for k in settings if k not in old]
    if diff:
        k = diff[0]
        raise LatentgeoError(f"{dest} holds a DiffED matrix computed with {k} {old.get(k)!r}, not {settings[k]!r}"
                             + (f" (also differ: {', '.join(diff[1:])})" if diff[1:] else "")
                             + "; re-run with the same settings to resume, or pass --fresh to start again")


def _diffed_matrix(*, den, user, run, model_opts, x, data, split, N, seed, sigma_min, encode, start, pts, sts,
                   n_nodes, lr, k, ek, probes, eval_probes, warm, pair_batch, max_points, fresh, boot, quiet,
                   dest, enc=None) -> None:
    """``latentgeo diffed --matrix N``: all pairs of N images, resumable from ``dest``."""
    import os
    import time

    import numpy as np
    import torch

    from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json
    from latentgeo.errors import LatentgeoError
    from latentgeo.spacetime.compare import mean_distance, rank_correlations, semantic_sentence, semantic_statistics
    from latentgeo.spacetime.diffed import _model_hash, default_warm_profile, edit_distance_matrix, read_matrix_cache
    from latentgeo.spacetime.plots import matrix_png

    if N > x.shape[0]:
        raise LatentgeoError(f"--matrix {N} exceeds the {x.shape[0]} samples of '{data}' ({split} split); pass "
                             f"--matrix {x.shape[0]} or fewer")
    labels_all = _labels(data, split, x)
    idx = _draw(x.shape[0], N, labels_all, seed)
    labels = labels_all[idx] if labels_all is not None else None
    total = N * (N - 1) // 2
    pilot = warm and total >= PILOT_FROM_PAIRS
    settings = {"run": str(run) if run is not None else None, "code": model_opts.code, "data": data, "split": split,
                "--matrix": N, "--seed": seed, "--sigma-min": sigma_min, "--encode": encode, "--n-points": pts,
                "--steps": sts, "--n-nodes": n_nodes, "--lr": lr, "--probes": probes, "--eval-probes": eval_probes,
                "--warm": warm, "--encoder": enc["path"] if enc else None, "model parameters": _model_hash(den)}
    _matrix_settings_check(dest, settings, fresh)
    dest.mkdir(parents=True, exist_ok=True)
    cache = dest / "diffed_matrix_cache.npz"
    sfile = dest / "diffed_matrix_settings.json"
    history = []
    if sfile.exists() and not fresh:
        from latentgeo.cli._options import read_json_file

        history = read_json_file(sfile, fix="delete it or pass --fresh").get("history", [])
    atomic_write_json(sfile, {"settings": settings, "history": history})

    p0 = next(den.parameters(), None)
    dt = p0.dtype if p0 is not None else torch.float32
    mdev = p0.device if p0 is not None else torch.device("cpu")
    X = x[torch.as_tensor(idx)].to(dt)
    Z = enc["encode"](X.to(mdev)).detach().to(dt) if enc else X.to(mdev)  # latent codes (or the images themselves)
    if max_points == 0:
        max_points = IMAGE_MAX_POINTS if Z.ndim == 4 else None
    warm_start = ("auto" if pilot else default_warm_profile(n_nodes)) if warm else None
    t0 = time.perf_counter()
    state = {"done": 0}

    def report(done, tot):
        state["done"] = done

    if not quiet:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task(f"DiffED matrix, {total:,} pairs", total=total)

        def report(done, tot):  # noqa: F811 (progress bar + count)
            state["done"] = done
            bar.update(task, completed=done)
    else:
        bar = None
    try:
        if bar is not None:
            bar.start()
        D, info = edit_distance_matrix(den, Z, sigma_min=sigma_min, encode=encode, pair_batch=pair_batch,
                                       out=cache, resume=not fresh, progress=report, seed=seed,
                                       max_points=max_points, warm_start=warm_start, return_info=True,
                                       n_points=pts, steps=sts, n_nodes=n_nodes, lr=lr, n_probes=k,
                                       eval_probes=ek, encode_steps=32, encode_from=start,
                                       **(_PILOT if pilot else {}))
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        try:
            _, done, _ = read_matrix_cache(cache)
            saved = int(done[np.triu_indices(N, 1)].sum())
        except LatentgeoError:
            saved = 0
        history.append({"seconds": round(time.perf_counter() - t0, 3), "interrupted": True, "pairs_saved": saved})
        atomic_write_json(sfile, {"settings": settings, "history": history})
        typer.echo(f"interrupted: {saved:,} of {total:,} pairs saved in {dest}; re-run the same command to resume",
                   err=True)
        raise SystemExit(130)
    finally:
        if bar is not None:
            bar.stop()
    secs = time.perf_counter() - t0
    history.append({"seconds": round(secs, 3), "computed": info["computed"], "resumed": info["resumed"]})
    atomic_write_json(sfile, {"settings": settings, "history": history})
    Dm = D.detach().to("cpu", torch.float64).numpy()
    F = X.reshape(N, -1).double().cpu()
    mats = {"diffed": Dm, "euclid": torch.cdist(F, F).numpy()}
    if X.ndim == 4:
        mats["ssim"] = _pairwise_dssim(X.cpu())
    iu = np.triu_indices(N, 1)
    neg = info["negative_fraction"].double().numpy()[iu]
    space = "latent" if enc else "pixel"
    rec = {"run": settings["run"], "model": getattr(den, "spec", None), "code": model_opts.code, "data": data,
           "split": split, "images": N, "pairs": total, "indices": idx.tolist(),
           "settings": {**settings, "--pair-batch": pair_batch, "--max-points": max_points,
                        "warm_start": "pilot (8 pairs x 100 cold steps)" if pilot else
                        ("built-in profile" if warm else "straight line"),
                        "warm_profile": None if info["warm_profile"] is None else
                        [float(v) for v in info["warm_profile"]], "probe_seed": info["seed"]},
           "diffed_space": space,
           "cost": {"seconds_this_run": secs, "pairs_computed_this_run": info["computed"],
                    "pairs_resumed": info["resumed"],
                    "seconds_per_pair": secs / info["computed"] if info["computed"] else None,
                    "seconds_all_runs": float(sum(h.get("seconds", 0.0) for h in history)),
                    "runs": len(history), "torch_threads": torch.get_num_threads(),
                    "device": str(mdev), "load_avg": list(os.getloadavg())},
           "negative_fraction_mean": float(neg.mean()) if neg.size else 0.0,
           "mean": {name: mean_distance(M, boot=boot, seed=seed) for name, M in mats.items()}}
    others = {n: M[iu] for n, M in mats.items() if n != "diffed"}
    if total >= 3:
        rec["rank_correlations"] = rank_correlations(Dm[iu], **others)
    summary = ""
    if labels is not None and N >= 4 and np.unique(labels).size >= 2 and np.bincount(labels).max() >= 2:
        st = semantic_statistics(mats, labels, boot=boot, seed=seed)
        rec["semantics"] = st
        rec["semantics_sentence"] = semantic_sentence(st)
        d = st["diffed"]
        summary = (f"DiffED same-class mean {_ci_txt(d['mean_within'])}, different-class {_ci_txt(d['mean_between'])}; "
                   + rec["semantics_sentence"])
        rec["summary"] = summary
    elif labels is not None:
        rec["semantics_note"] = (f"no class statistics: the {N} images drawn hold no two of one class; pass a larger "
                                 "--matrix (the draw is class-stratified)")
        typer.echo(rec["semantics_note"])
    buf = __import__("io").BytesIO()
    arrays = {"matrix": Dm, "indices": idx, "euclid": mats["euclid"], "negative_fraction": info[
        "negative_fraction"].double().numpy()}
    if "ssim" in mats:
        arrays["dssim"] = mats["ssim"]
    if labels is not None:
        arrays["labels"] = labels
    np.savez(buf, **arrays)
    atomic_write_bytes(dest / "diffed_matrix.npz", buf.getvalue())
    atomic_write_json(dest / "diffed_matrix.json", rec)
    names = {"diffed": f"DiffED ({space} space)", "euclid": "Euclidean (pixels)", "ssim": "1 - SSIM"}
    atomic_write_bytes(dest / "diffed_matrix.png",
                       matrix_png({names[n]: M for n, M in mats.items()}, labels,
                                  title=f"{N} images of {data} ({split})" + (", sorted by class" if labels is not None
                                                                             else "")))
    per = f"{secs / info['computed']:.3g} s/pair" if info["computed"] else "all pairs from the cache"
    typer.echo(f"DiffED matrix of {N} images ({total:,} pairs; {info['computed']:,} computed now, "
               f"{info['resumed']:,} resumed; {secs:.1f} s, {per}): mean {_ci_txt(rec['mean']['diffed'])}; wrote "
               f"{dest}")
    if summary:
        typer.echo(summary)


def _ci_txt(v, fmt: str = ".3g") -> str:
    ci = v.get("ci95")
    return f"{v['value']:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


@model_spec_options("denoiser")
def diffed_cmd(
    run: Optional[str] = typer.Argument(None, help=_RUN_HELP),
    data: str = typer.Option(..., "--data", help="Data set whose random pairs are compared (the model's data)."),
    pairs: int = opt_int(16, "--pairs", help="Number of random pairs (>= 3, for the rank correlations).", lo=3,
                         hi=MAX_SAMPLES),
    matrix: Optional[int] = opt_int(None, "--matrix", help="All pairs of N images (2..2000; a seeded, class-"
                                    "stratified draw when the data set has labels) instead of --pairs; resumable: "
                                    "re-run the same command to continue.", lo=2, hi=MAX_MATRIX),
    split: str = typer.Option("test", "--split", help="train | test."),
    sigma_min: float = _sigma_opt(0.1, "--sigma-min", help="Noise level of the endpoints (> 0)."),
    encode: bool = typer.Option(True, "--encode/--no-encode", help="PF-ODE-encode clean data to sigma_min first."),
    n_points: str = typer.Option("16", "--n-points", help="Curve points; a list = coarse-to-fine (anchor: 16,64)."),
    steps: str = typer.Option("30", "--steps", help="Adam steps per stage (anchor: 150,50 with --no-warm)."),
    n_nodes: int = opt_int(6, "--n-nodes", help="Interior spline knots (anchor 8).", lo=1, hi=MAX_NODES),
    lr: float = opt_float(0.1, "--lr", help="Adam learning rate (> 0).", lo=0, lo_open=True, hi=1e3),
    probes: str = typer.Option("1", "--probes", help="Rademacher probes per point, or 'exact'."),
    eval_probes: str = typer.Option("auto", "--eval-probes", help="Probes for the final lengths: an integer, 'exact', "
                                    "or 'auto' (exact up to 16 dimensions, else 16 probes)."),
    warm: bool = typer.Option(True, "--warm/--no-warm", help="Start every geodesic from a learnt log-SNR profile "
                              "(a pilot of 8 pairs for >= 200 pairs, else the built-in one) instead of the straight "
                              "line: 30 warm steps come within ~3% of 300 cold ones."),
    chunk_size: int = opt_int(0, "--chunk-size", help="Points per denoiser call (0 = all).", lo=0, hi=MAX_SAMPLES),
    max_points: int = opt_int(0, "--max-points", help="Memory bound of --matrix: curve points per denoiser call "
                              f"(0 = auto: {IMAGE_MAX_POINTS} for images, all for vectors); does not change the "
                              "result.", lo=0, hi=MAX_POINTS),
    pair_batch: int = opt_int(0, "--pair-batch", help="Geodesics optimised together (0 = auto: 16 for --pairs, 128 "
                              "for --matrix; keep it when resuming to reproduce an uninterrupted run exactly).",
                              lo=0, hi=MAX_SAMPLES),
    fresh: bool = typer.Option(False, "--fresh", help="--matrix: discard a matrix begun in the output folder."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP + " Euclidean / SSIM stay in "
                                          "pixel space."),
    boot: int = opt_int(1000, "--boot", help="Bootstrap resamples of the images for the 95% CIs (0 = none).", lo=0,
                        hi=100_000),
    seed: int = opt_seed(),
    out: Optional[str] = opt_out_dir(None, "--out", help="Output folder (default RUN/diffed)."),
    quiet: bool = typer.Option(False, "--quiet"),
    device: str = opt_device(),
    model_opts: ModelOptions = None,
) -> None:
    """Diffusion Edit Distance vs Euclidean distance (and SSIM for images): random pairs (--pairs) or all pairs of N
    images (--matrix, resumable), with rank correlations and, for labelled data, class statistics with CIs."""
    import torch

    from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json
    from latentgeo.data import load
    from latentgeo.errors import LatentgeoError, check_choice, check_positive
    from latentgeo.spacetime.compare import euclidean, rank_correlations, ssim
    from latentgeo.spacetime.diffed import edit_distance_pairs, encode_to_sigma
    from latentgeo.spacetime.plots import curve_png, image_strip_png, scatter_png

    check_positive(sigma_min, "--sigma-min")
    check_choice(split, ["train", "test"], "split")
    if pairs < 3:
        raise LatentgeoError(f"--pairs must be >= 3 to compute rank correlations, got {pairs}; pass 3 or more")
    if matrix is not None and not 2 <= matrix <= MAX_MATRIX:
        raise LatentgeoError(f"--matrix must be in 2..{MAX_MATRIX}, got {matrix}; pass a size in that range")
    if chunk_size and max_points and chunk_size != max_points:
        raise LatentgeoError("--chunk-size and --max-points are the same bound; pass only one of them")
    pts, sts = _schedule(n_points, steps)
    k, ek = _probes(probes), _probes(eval_probes, allow_auto=True, name="--eval-probes")
    if encode and not sigma_min > 0.002:
        raise LatentgeoError(f"--encode needs --sigma-min above 0.002 (the PF-ODE starts there), got {sigma_min:g}; "
                             "raise it or pass --no-encode")
    _check_run(run, model_opts)
    dest = _dest(out, run, "diffed")
    dev = _device(device)
    den, user, shape = _load_run(run, dev, model_opts)
    check_sigmas(den, {"--sigma-min": sigma_min}, model_opts.extrapolate)
    start = _encode_start(den)
    if encode and not sigma_min > start:
        raise LatentgeoError(f"--encode needs --sigma-min above {start:.4g} (the PF-ODE starts at max(0.002, the "
                             f"model's sigma_min)), got {sigma_min:g}; raise it or pass --no-encode")
    enc = None
    if encoder is not None:
        x, enc = _load_encoder(encoder, user, run, dev, data, split, model_opts)
    else:
        x = load(data, split=split)
    if enc is None and shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise LatentgeoError(f"data set '{data}' has samples of shape {tuple(x.shape[1:])} but the model was trained "
                             f"on {tuple(shape)}; pass the model's data set")
    if x.shape[0] < 2:
        raise LatentgeoError(f"data set '{data}' has fewer than 2 samples; pass a data set with at least 2")
    if matrix is not None:
        _diffed_matrix(den=den, user=user, run=run, model_opts=model_opts, x=x, data=data, split=split, N=matrix,
                       seed=seed, sigma_min=sigma_min, encode=encode, start=start, pts=pts, sts=sts, n_nodes=n_nodes,
                       lr=lr, k=k, ek=ek, probes=probes, eval_probes=eval_probes, warm=warm,
                       pair_batch=pair_batch or 128, max_points=max_points or chunk_size, fresh=fresh, boot=boot,
                       quiet=quiet, dest=dest, enc=enc)
        return
    pair_batch = pair_batch or 16
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, x.shape[0], (pairs,), generator=gen)
    j = (i + torch.randint(1, x.shape[0], (pairs,), generator=gen)) % x.shape[0]  # j != i
    A, B = x[i], x[j]
    p0 = next(den.parameters(), None)
    dt = p0.dtype if p0 is not None else torch.float32
    A, B = A.to(dt), B.to(dt)
    mdev = p0.device if p0 is not None else A.device
    ZA, ZB = (enc["encode"](A.to(mdev)).to(dt), enc["encode"](B.to(mdev)).to(dt)) if enc else (A, B)
    if encode:
        both = encode_to_sigma(den, torch.cat([ZA, ZB]).to(mdev), sigma_min, sigma_start=start)
        Ae, Be = both[:pairs], both[pairs:]
    else:
        Ae, Be = ZA.to(mdev), ZB.to(mdev)
    L, geos, negs = [], [], []
    for s in range(0, pairs, pair_batch):
        d, g = edit_distance_pairs(den, Ae[s:s + pair_batch], Be[s:s + pair_batch], sigma_min=sigma_min,
                                   encode=False, n_points=pts, steps=sts, n_nodes=n_nodes, lr=lr, n_probes=k,
                                   eval_probes=ek, chunk_size=(chunk_size or max_points) or None, generator=gen,
                                   progress=not quiet, return_geodesic=True,
                                   warm_start="default" if warm else None)
        L.append(d.detach().cpu())
        negs.append(torch.as_tensor(g.negative_fraction).reshape(-1).cpu())
        geos.append(g)
    diffed = torch.cat(L).double().numpy()
    eu = euclidean(A, B).double().numpy()
    res = {"run": str(run) if run is not None else None, "model": getattr(den, "spec", None),
           "code": model_opts.code, "data": data, "split": split, "pairs": pairs, "sigma_min": sigma_min,
           "encode": encode, "warm": warm, "encoder": enc["path"] if enc else None,
           "diffed_space": "latent" if enc else "pixel",
           "n_points": pts, "steps": sts, "n_nodes": n_nodes, "probes": probes, "eval_probes": eval_probes,
           "index_a": i.tolist(), "index_b": j.tolist(), "diffed": diffed.tolist(), "euclidean": eu.tolist(),
           "negative_fraction": torch.cat(negs).double().tolist()}
    others = {"euclidean": eu}
    if x.ndim == 4:
        ss = ssim(A, B).numpy()
        res["ssim"] = ss.tolist()
        others["ssim"] = ss
    res["rank_correlations"] = rank_correlations(diffed, **others)
    res["diffed_mean"] = _pair_mean(diffed, boot, seed)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / "diffed.json", res)
    atomic_write_bytes(dest / "diffed_scatter.png",
                       scatter_png(list(others.values()), diffed, list(others.keys()), "DiffED",
                                   title=f"DiffED vs reference measures ({pairs} pairs of {data})"))
    g0 = geos[0]
    if enc is not None:
        from latentgeo.spacetime.latent import decode_latents
        from latentgeo.spacetime.plots import decoded_strip_png

        png = decoded_strip_png(decode_latents(enc["decode"], g0.xs[0].detach()), g0.sigmas[0],
                                title=f"DiffED latent geodesic, pair 0 (decoded): length {diffed[0]:.3g}")
    elif x.ndim == 4:
        png = image_strip_png(den, g0.xs[0], g0.sigmas[0], title=f"DiffED geodesic, pair 0: length {diffed[0]:.3g}")
    else:
        png = curve_png(g0.xs[: min(4, g0.xs.shape[0])].cpu(), g0.sigmas[: min(4, g0.xs.shape[0])].cpu(),
                        title="DiffED geodesics (first pairs)", data=x[:2000])
    atomic_write_bytes(dest / "diffed_geodesic.png", png)
    corr = ", ".join(f"{n}: Spearman {v['spearman']:+.3f}" for n, v in res["rank_correlations"].items())
    typer.echo(f"DiffED over {pairs} pairs: mean {_ci_txt(res['diffed_mean'])}; {corr}; wrote {dest}")


def _pair_mean(v, boot: int, seed: int) -> dict:
    """Mean of independent per-pair values [P] with a percentile-bootstrap 95% CI over pairs."""
    import numpy as np

    v = np.asarray(v, dtype=float)
    rng = np.random.default_rng(seed)
    reps = [float(v[rng.integers(0, v.size, v.size)].mean()) for _ in range(int(boot))]
    return {"value": float(v.mean()),
            "ci95": [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))] if reps else None}


def demo_cmd(
    name: str = typer.Argument("all", help="mixture1d | pullback | collapse | all"),
    out: str = opt_out_dir("spacetime_demos", "--out", help="Output folder for PNG + JSON."),
) -> None:
    """The spacetime paper's toy results: Fig. 1 (1-D mixture), pullback straightness, Fisher-Rao collapse."""
    from latentgeo.errors import check_choice
    from latentgeo.spacetime import demos

    check_choice(name, ["mixture1d", "pullback", "collapse", "all"], "demo")
    todo = {"mixture1d": demos.mixture_1d_demo, "pullback": demos.pullback_demo,
            "collapse": demos.fisher_rao_collapse_demo}
    for key, fn in todo.items():
        if name in (key, "all"):
            r = fn(out=out)
            typer.echo(f"{key}: wrote {', '.join(r.get('files', []))}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this area's commands to the root app (and to `latentgeo train`)."""
    app.command("geodesic")(geodesic_cmd)
    app.command("diffed")(diffed_cmd)
    app.command("spacetime-demo")(demo_cmd)
