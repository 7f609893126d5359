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
        raise LatentgeoError(f"{name} must hold integers >= {lo}, got '{text}'")
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
        raise LatentgeoError(f"{name} must be a positive integer or {alt}, got '{text}'")
    if k > MAX_PROBES:
        raise LatentgeoError(f"{name} must be <= {MAX_PROBES} (or {alt}), got {k}")
    return k


def _schedule(n_points: str, steps: str):
    """``(points, steps)`` lists of a coarse-to-fine schedule, checked."""
    from latentgeo.errors import LatentgeoError

    pts = _ints(n_points, "--n-points", lo=2, hi=MAX_POINTS)
    sts = _ints(steps, "--steps", lo=1, hi=MAX_STEPS)
    if len(sts) == 1:
        sts = sts * len(pts)
    if len(pts) != len(sts):
        raise LatentgeoError(f"--n-points {n_points} and --steps {steps} need the same number of entries")
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
            raise LatentgeoError(f"with --data, {what} must be a sample index (integer), got '{text}'")
        if not 0 <= i < data.shape[0]:
            raise LatentgeoError(f"{what} index {i} is out of range for {data.shape[0]} samples; "
                                 f"pass 0..{data.shape[0] - 1}")
        return data[i].double()
    try:
        v = [float(c) for c in t.replace(" ", "").split(",") if c]
    except ValueError:
        raise LatentgeoError(f"{what} must be comma-separated numbers like '0.5,-1.2' (or an index with --data), "
                             f"got '{text}'") from None
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


@model_spec_options("denoiser")
def diffed_cmd(
    run: Optional[str] = typer.Argument(None, help=_RUN_HELP),
    data: str = typer.Option(..., "--data", help="Data set whose random pairs are compared (the model's data)."),
    pairs: int = opt_int(16, "--pairs", help="Number of random pairs (>= 3, for the rank correlations).", lo=3,
                         hi=MAX_SAMPLES),
    split: str = typer.Option("test", "--split", help="train | test."),
    sigma_min: float = _sigma_opt(0.1, "--sigma-min", help="Noise level of the endpoints (> 0)."),
    encode: bool = typer.Option(True, "--encode/--no-encode", help="PF-ODE-encode clean data to sigma_min first."),
    n_points: str = typer.Option("16,64", "--n-points", help="Curve points, coarse-to-fine (anchor 16,64)."),
    steps: str = typer.Option("150,50", "--steps", help="Adam steps per stage."),
    n_nodes: int = opt_int(8, "--n-nodes", help="Interior spline knots (anchor 8).", lo=1, hi=MAX_NODES),
    lr: float = opt_float(0.1, "--lr", help="Adam learning rate (> 0).", lo=0, lo_open=True, hi=1e3),
    probes: str = typer.Option("1", "--probes", help="Rademacher probes per point, or 'exact'."),
    eval_probes: str = typer.Option("auto", "--eval-probes", help="Probes for the final lengths: an integer, 'exact', "
                                    "or 'auto' (exact up to 16 dimensions, else 16 probes)."),
    chunk_size: int = opt_int(0, "--chunk-size", help="Points per denoiser call (0 = all).", lo=0, hi=MAX_SAMPLES),
    pair_batch: int = opt_int(16, "--pair-batch", help="Geodesics optimised together.", lo=1, hi=MAX_SAMPLES),
    seed: int = opt_seed(),
    out: Optional[str] = opt_out_dir(None, "--out", help="Output folder (default RUN/diffed)."),
    quiet: bool = typer.Option(False, "--quiet"),
    device: str = opt_device(),
    model_opts: ModelOptions = None,
) -> None:
    """Diffusion Edit Distance over random pairs vs Euclidean distance (and SSIM for images), with rank correlations."""
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
        raise LatentgeoError(f"--pairs must be >= 3 to compute rank correlations, got {pairs}")
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
    x = load(data, split=split)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise LatentgeoError(f"data set '{data}' has samples of shape {tuple(x.shape[1:])} but the model was trained "
                             f"on {tuple(shape)}; pass the model's data set")
    if x.shape[0] < 2:
        raise LatentgeoError(f"data set '{data}' has fewer than 2 samples")
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, x.shape[0], (pairs,), generator=gen)
    j = (i + torch.randint(1, x.shape[0], (pairs,), generator=gen)) % x.shape[0]  # j != i
    A, B = x[i], x[j]
    p0 = next(den.parameters(), None)
    dt = p0.dtype if p0 is not None else torch.float32
    A, B = A.to(dt), B.to(dt)
    mdev = p0.device if p0 is not None else A.device
    if encode:
        both = encode_to_sigma(den, torch.cat([A, B]).to(mdev), sigma_min, sigma_start=start)
        Ae, Be = both[:pairs], both[pairs:]
    else:
        Ae, Be = A.to(mdev), B.to(mdev)
    L, geos, negs = [], [], []
    for s in range(0, pairs, pair_batch):
        d, g = edit_distance_pairs(den, Ae[s:s + pair_batch], Be[s:s + pair_batch], sigma_min=sigma_min,
                                   encode=False, n_points=pts, steps=sts, n_nodes=n_nodes, lr=lr, n_probes=k,
                                   eval_probes=ek, chunk_size=chunk_size or None, generator=gen,
                                   progress=not quiet, return_geodesic=True)
        L.append(d.detach().cpu())
        negs.append(torch.as_tensor(g.negative_fraction).reshape(-1).cpu())
        geos.append(g)
    diffed = torch.cat(L).double().numpy()
    eu = euclidean(A, B).double().numpy()
    res = {"run": str(run) if run is not None else None, "model": getattr(den, "spec", None),
           "code": model_opts.code, "data": data, "split": split, "pairs": pairs, "sigma_min": sigma_min,
           "encode": encode,
           "n_points": pts, "steps": sts, "n_nodes": n_nodes, "probes": probes, "eval_probes": eval_probes,
           "index_a": i.tolist(), "index_b": j.tolist(), "diffed": diffed.tolist(), "euclidean": eu.tolist(),
           "negative_fraction": torch.cat(negs).double().tolist()}
    others = {"euclidean": eu}
    if x.ndim == 4:
        ss = ssim(A, B).numpy()
        res["ssim"] = ss.tolist()
        others["ssim"] = ss
    res["rank_correlations"] = rank_correlations(diffed, **others)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / "diffed.json", res)
    atomic_write_bytes(dest / "diffed_scatter.png",
                       scatter_png(list(others.values()), diffed, list(others.keys()), "DiffED",
                                   title=f"DiffED vs reference measures ({pairs} pairs of {data})"))
    g0 = geos[0]
    if x.ndim == 4:
        png = image_strip_png(den, g0.xs[0], g0.sigmas[0], title=f"DiffED geodesic, pair 0: length {diffed[0]:.3g}")
    else:
        png = curve_png(g0.xs[: min(4, g0.xs.shape[0])].cpu(), g0.sigmas[: min(4, g0.xs.shape[0])].cpu(),
                        title="DiffED geodesics (first pairs)", data=x[:2000])
    atomic_write_bytes(dest / "diffed_geodesic.png", png)
    corr = ", ".join(f"{n}: Spearman {v['spearman']:+.3f}" for n, v in res["rank_correlations"].items())
    typer.echo(f"DiffED over {pairs} pairs: mean {diffed.mean():.4g}; {corr}; wrote {dest}")


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
