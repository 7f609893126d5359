"""CLI of the Fisher diagnostics: ``latentgeo fisher toy|curves`` and ``latentgeo diagnose``.

Every option is checked at parse time (:mod:`latentgeo.cli._options`) or at the top of the command body, before
any data is sampled or any denoiser trained.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from latentgeo.cli._options import (MAX_SAMPLES, MAX_STEPS, ModelOptions, model_range, model_spec_options,
                                    opt_device, opt_float, opt_int, opt_out_dir, opt_seed, precheck_input,
                                    resolve_model, sigma_grid, valid_floats)
from latentgeo.errors import LatentgeoError

#: Noise levels above this are typos (EDM's sigma_max is 80); they overflow the noised samples.
SIGMA_HI = 1e5
#: Hutchinson probes / noise levels per curve beyond these are typos.
MAX_PROBES = 4096
MAX_SIGMAS = 1000
#: What ``diagnose`` trains on when ``--n`` is not given (fewer when the data set has fewer).
DIAGNOSE_N = 2000
#: diagnose's model options: --code / --subfolder / --allow-pickle for the encoders, the rest for reused denoisers.
_DIAGNOSE_HELP = {
    "code": "module:factory -- one more encoder x -> z, built by your Python code (imported only because you name "
            "it here).",
    "subfolder": "Component of diffusers pipeline folders given as --encoder (default: vae/).",
    "parametrization": "What --pixel-denoiser / --latent-denoiser predict (TorchScript / export models): ve | edm | "
                       "eps | v | x0 | velocity | velocity_latentgeo.",
}


def _device(device: str) -> str:
    from latentgeo.train.loop import resolve_device

    return str(resolve_device(device))


def _toy_params(name: str, text: Optional[str], dim: int) -> Optional[list]:
    """The ``--params`` of a toy, checked against the toy's range (before any denoiser is fitted)."""
    p = valid_floats(text, "--params")
    if p is None:
        return None
    if name == "compression":
        bad = [v for v in p if v != int(v)]
        if bad:
            raise LatentgeoError(f"--params of the compression toy are latent dimensions d (integers), got {bad[0]:g}; "
                                 "pass e.g. --params 4,8,12")
        out = [int(v) for v in p]
        for d in out:
            if not 2 <= d <= dim:
                raise LatentgeoError(f"--params: latent dimension d={d} must lie in [2, --dim {dim}]; pass smaller "
                                     "values or a larger --dim")
        return out
    if name == "tangential":
        for v in p:
            if not -1 < v < 1:
                raise LatentgeoError(f"--params: delta0={v:g} must lie strictly between -1 and 1; e.g. --params "
                                     "0.1,0.3")
    return p


def _diagnose_labels(labels: Optional[str], data: str, x, seed: int):
    """``--labels``: None, the data set's own labels ('dataset'), or a .npy / .txt file (first len(x) entries)."""
    if labels is None:
        return None
    from pathlib import Path

    import numpy as np
    import torch

    if labels.strip().lower() == "dataset":
        from latentgeo.data import load

        try:
            x2, y = load(data, n=x.shape[0], seed=seed, return_labels=True)
        except (TypeError, LatentgeoError):
            raise LatentgeoError(f"'{data}' has no labels latentgeo can load; pass --labels FILE (.npy / .txt, one "
                                 "integer per sample)") from None
        if tuple(x2.shape) != tuple(x.shape) or not torch.equal(x2, x):
            raise LatentgeoError(f"the labels of '{data}' do not line up with the loaded samples; pass --labels "
                                 "FILE")
        return y
    p = Path(labels).expanduser()
    if not p.is_file():
        raise LatentgeoError(f"--labels '{labels}' is neither 'dataset' nor a file; pass a .npy / .txt file with one "
                             "integer label per sample")
    try:
        y = np.load(p, allow_pickle=False) if p.suffix.lower() == ".npy" else np.loadtxt(p)
    except (OSError, ValueError) as exc:
        raise LatentgeoError(f"--labels '{labels}' cannot be read ({exc}); pass a .npy / .txt file of integers") \
            from None
    y = np.asarray(y).reshape(-1)
    if y.size < x.shape[0]:
        raise LatentgeoError(f"--labels has {y.size} labels for {x.shape[0]} samples; pass one label per sample")
    return torch.as_tensor(y[: x.shape[0]])


def _load_upto(data: str, n: Optional[int], seed: int, default: int, what: str = "--n"):
    """``(x, note)``: ``n`` samples of ``data`` (an explicit ``n`` larger than the data set is an error), or, with
    ``n`` None, ``min(default, available)`` of them (``note`` says when fewer than ``default`` exist)."""
    from latentgeo.data import load
    from latentgeo.data.registry import _ALIASES, _SAMPLER_NAMES

    if n is not None:
        return load(data, n=n, seed=seed), None
    key = str(data).strip().lower()
    if _ALIASES.get(key, key) in _SAMPLER_NAMES:  # synthetic: any n can be drawn
        return load(data, n=default, seed=seed), None
    x = load(data, seed=seed)
    note = None
    if x.shape[0] < default:
        note = (f"note: '{data}' has {x.shape[0]:,} training samples (fewer than the default {what} {default:,}); "
                "using all of them")
    return x[:default], note


def _check_denoiser_on(den, x, what: str) -> None:
    """One cheap denoiser call on two samples: a data shape the denoiser was not trained on fails here, at once."""
    import torch

    p = next(den.parameters(), None) if isinstance(den, torch.nn.Module) else None
    xb = x[:2].to(p.dtype if p is not None else x.dtype)
    if p is not None:
        xb = xb.to(p.device)
    lo, hi = model_range(den)
    s = min(max(1.0, lo), hi)  # inside the model's trained noise range
    try:
        with torch.no_grad():
            y = den(xb, torch.full((xb.shape[0],), s, dtype=xb.dtype, device=xb.device))
    except (RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, LatentgeoError):
            raise
        raise LatentgeoError(f"the denoiser does not accept {what} of shape {tuple(x.shape[1:])} "
                             f"({str(exc).splitlines()[0][:120]}); pass the data set it was trained on") from None
    if tuple(y.shape) != tuple(xb.shape):
        raise LatentgeoError(f"the denoiser maps {what} of shape {tuple(x.shape[1:])} to {tuple(y.shape[1:])}; pass "
                             "the data set it was trained on")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``fisher`` (toy, curves) and ``diagnose`` to the root app."""
    fisher_app = typer.Typer(help="Fisher diagnostics of diffusability: FI / FIR curves and the paper's toys.",
                             no_args_is_help=True)
    app.add_typer(fisher_app, name="fisher")

    @fisher_app.command("toy")
    def toy(
        name: str = typer.Argument(..., help="compression | tangential | curvature"),
        out: str = opt_out_dir(..., "--out", help="Output folder (toy_<name>.json and PNG plots)."),
        exact: bool = typer.Option(False, "--exact", help="Use the exact denoisers instead of training EDM MLPs."),
        params: Optional[str] = typer.Option(None, "--params",
                                             help="Swept values: d (compression, integers in [2, --dim]), delta0 "
                                                  "(tangential, in (-1, 1)), eps0 (curvature); comma-separated."),
        steps: int = opt_int(1500, "--steps", help="Training steps per denoiser (trained mode).", lo=1,
                             hi=MAX_STEPS),
        n_train: int = opt_int(4000, "--n-train", help="Training samples per law (trained mode).", lo=2,
                               hi=MAX_SAMPLES),
        n_eval: int = opt_int(1000, "--n-eval", help="Samples for the Fisher curves (>= 2).", lo=2, hi=MAX_SAMPLES),
        probes: int = opt_int(8, "--probes", help="Hutchinson probes per sample.", lo=1, hi=MAX_PROBES),
        sigmas: Optional[str] = typer.Option(None, "--sigmas", help="Noise levels, comma-separated (> 0)."),
        dim: int = opt_int(16, "--dim", help="Data dimension D of the compression toy (>= 3).", lo=3, hi=4096),
        omega: float = opt_float(5.0, "--omega", help="Ripple frequency of the curvature toy (> 0).", lo=0,
                                 lo_open=True, hi=1e4),
        seed: int = opt_seed(),
        device: str = opt_device(help="Device of the trained denoisers: auto (CUDA when available) | cpu | cuda | "
                                      "cuda:K (exact mode runs on the CPU)."),
    ) -> None:
        """Run a Fisher toy (data vs latent law) and plot D_R against the exact curves."""
        from latentgeo.errors import check_choice
        from latentgeo.fisher.toys import TOYS

        check_choice(name, TOYS, "toy")
        p = _toy_params(name, params, dim)
        sg = valid_floats(sigmas, "--sigmas", lo=0, hi=SIGMA_HI, lo_open=True)
        if sg is not None and len(sg) > MAX_SIGMAS:
            raise LatentgeoError(f"--sigmas holds {len(sg)} values; pass at most {MAX_SIGMAS}")
        from latentgeo.fisher.toys import run_toy

        res = run_toy(name, out=out, params=p, denoisers="exact" if exact else "trained", sigmas=sg,
                      n_eval=n_eval, n_probes=probes, n_train=n_train, steps=steps, D=dim, omega=omega, seed=seed,
                      progress=True, device="cpu" if exact else _device(device))
        for row in res["rows"]:
            extra = {k: round(v, 4) for k, v in row.items() if isinstance(v, float) and k != "param"}
            typer.echo(f"{row['label']}: D_R at sigma={res['sigma'][0]:.3g} = {row['d_r'][0]:.4f} "
                       f"(exact {row['exact_d_r'][0]:.4f}) {extra}")
        typer.echo(f"wrote {out}/toy_{name}.json and plots")

    @fisher_app.command("curves")
    @model_spec_options("denoiser")
    def curves_cmd(
        denoiser: Optional[str] = typer.Option(None, "--denoiser", help="The denoiser: a `latentgeo train diffusion` "
                                               "folder or .safetensors file, a diffusers pipeline / UNet folder, a "
                                               "TorchScript file with --parametrization (or use --code)."),
        data: str = typer.Option(..., "--data", help="Data set name or file (see `latentgeo data list`)."),
        out: str = opt_out_dir(..., "--out", help="Output folder (curves.json, curves.png)."),
        n: int = opt_int(256, "--n", help="Samples (>= 2).", lo=2, hi=MAX_SAMPLES),
        probes: int = opt_int(8, "--probes", help="Hutchinson probes per sample.", lo=1, hi=MAX_PROBES),
        n_sigmas: int = opt_int(16, "--n-sigmas", help="Noise levels.", lo=1, hi=MAX_SIGMAS),
        sigma_min: Optional[float] = opt_float(None, "--sigma-min", help="Smallest noise level (> 0; default "
                                               "max(0.01, the model's sigma_min)).", lo=0, lo_open=True,
                                               hi=SIGMA_HI),
        sigma_max: Optional[float] = opt_float(None, "--sigma-max", help=f"Largest noise level (<= {SIGMA_HI:g}; "
                                               "default min(80, the model's sigma_max)).", lo=0, lo_open=True,
                                               hi=SIGMA_HI),
        float64: bool = typer.Option(False, "--float64", help="Compute in float64."),
        seed: int = opt_seed(),
        device: str = opt_device(),
        model_opts: ModelOptions = None,
    ) -> None:
        """FI, FIR, MMSE and MMSE-rate curves of a trained denoiser on data (data as the denoiser was trained)."""
        from pathlib import Path

        import torch

        if sigma_min is not None and sigma_max is not None and not sigma_min < sigma_max:
            raise LatentgeoError(f"--sigma-min {sigma_min:g} must be below --sigma-max {sigma_max:g}; swap or fix "
                                 "them")
        if denoiser is None and model_opts.code is None:
            raise LatentgeoError("no model given; pass --denoiser SPEC (a latentgeo run, a diffusers folder, a "
                                 "TorchScript file) or --code module:factory")
        if denoiser is not None and not Path(denoiser).exists() and Path(denoiser + ".safetensors").exists():
            denoiser = denoiser + ".safetensors"
        from latentgeo.data import load
        from latentgeo.fisher import default_sigmas, fisher_curves

        dev = _device(device)
        den = resolve_model("denoiser", denoiser, model_opts, device=dev, what="--denoiser")
        lo, hi = sigma_grid(den, sigma_min, sigma_max, model_opts.extrapolate)
        x = load(data, n=n, seed=seed)
        _check_denoiser_on(den, x, f"data '{data}'")
        c = fisher_curves(den, x.to(dev), default_sigmas(n_sigmas, lo, hi), n_probes=probes,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64 if float64 else None,
                          label=Path(denoiser).name if denoiser else model_opts.code)
        c.save(Path(out) / "curves.json")
        c.plot(Path(out) / "curves.png")
        for i in range(len(c.sigma)):
            typer.echo(f"sigma={c.sigma[i]:.4g}  I={c.fi[i]:.5g}±{c.fi_se[i]:.2g}  R={c.fir[i]:.5g}±{c.fir_se[i]:.2g}  "
                       f"mmse'={c.mmse_rate[i]:.5g}")
        typer.echo(f"wrote {out}/curves.json and curves.png")

    @app.command("diagnose")
    @model_spec_options("denoiser", help=_DIAGNOSE_HELP)
    def diagnose_cmd(
        encoder: Optional[List[str]] = typer.Option(None, "--encoder", help="Encoder: a latentgeo autoencoder run, a "
                                                    "diffusers VAE / pipeline folder (images in [-1, 1]), a "
                                                    "TorchScript file x -> z; repeat for several."),
        data: str = typer.Option(..., "--data", help="Data set name or file (see `latentgeo data list`)."),
        out: str = opt_out_dir(..., "--out", help="Output folder: summary.json, plots, cached denoisers."),
        n: Optional[int] = opt_int(None, "--n", help=f"Training samples for the denoisers (default: "
                                                     f"{DIAGNOSE_N:,}, or all when the data set has fewer).",
                                   lo=18, hi=MAX_SAMPLES),
        steps: int = opt_int(2000, "--steps", help="Denoiser training steps (pixels and each latent space; >= 1).",
                             lo=1, hi=MAX_STEPS),
        n_eval: int = opt_int(256, "--n-eval", help="Samples for the Fisher curves (>= 2).", lo=2, hi=MAX_SAMPLES),
        probes: int = opt_int(4, "--probes", help="Hutchinson probes per sample.", lo=1, hi=MAX_PROBES),
        n_sigmas: int = opt_int(14, "--n-sigmas", help="Noise levels in [0.01, 80] (>= 3, so that some lie in the "
                                                       "verdict's mid range [0.05, 5]; narrowed to the range of "
                                                       "reused denoisers).", lo=3, hi=MAX_SIGMAS),
        net: str = typer.Option("mlp", "--net", help="Denoiser network: mlp | unet."),
        pixel_denoiser: Optional[str] = typer.Option(None, "--pixel-denoiser",
                                                     help="Reuse a pixel denoiser trained on the normalised data "
                                                          "(any model spec; see the model options below)."),
        latent_denoiser: Optional[List[str]] = typer.Option(None, "--latent-denoiser",
                                                            help="NAME=SPEC: reuse a denoiser trained on encoder "
                                                                 "NAME's normalised latents (NAME: the encoder's "
                                                                 "folder name); repeat for several."),
        fisher: bool = typer.Option(True, "--fisher/--no-fisher",
                                    help="Train (or reuse) the denoisers and measure the Fisher curves and D_R "
                                         "(default); --no-fisher keeps only the encoder diagnostics (seconds)."),
        n_geometry: int = opt_int(1000, "--n-geometry", help="Samples for the neighbourhood and reconstruction "
                                                             "metrics (>= 18).", lo=18, hi=MAX_SAMPLES),
        seed: int = opt_seed(),
        quick: bool = typer.Option(False, "--quick", help="Tiny settings for a smoke run (minutes on a CPU)."),
        labels: Optional[str] = typer.Option(None, "--labels", help="Class labels of the data: 'dataset' (the data "
                                             "set's own labels: digits, fashion-mnist) or a .npy / .txt file with "
                                             "one integer per sample; they train the feature classifier of the "
                                             "generation measures and give VIV and LNC."),
        latent_shape: Optional[str] = typer.Option(None, "--latent-shape", help="C,H,W of flattened spatial "
                                                   "latents (e.g. 4,7,7), so the equivariance and spatial measures "
                                                   "apply."),
        n_generation: int = opt_int(500, "--n-generation", help="Held-out images for the interpolation and noise "
                                                                "measures (the FD reference is as many again).",
                                    lo=8, hi=MAX_SAMPLES),
        reference_flow_steps: Optional[int] = opt_int(None, "--reference-flow-steps", help="Also train a cheap "
                                                      "flow on each latent for this many steps and report its FD "
                                                      "(a reference generator, not a diagnostic).", lo=1,
                                                      hi=MAX_STEPS),
        device: str = opt_device(help="Device of the denoisers: auto (CUDA when available) | cpu | cuda | cuda:K "
                                      "(encoders and penalties run on the CPU)."),
        model_opts: ModelOptions = None,
    ) -> None:
        """How diffusable is each encoder's latent space, and why: the diffusability report (report.html, summary.json)."""
        import re
        from pathlib import Path

        from latentgeo.errors import check_choice
        from latentgeo.resolve import ACCEPTED, check_input_shape

        check_choice(net, ["mlp", "unet"], "--net")
        encoder = list(encoder or [])
        if not encoder and model_opts.code is None:
            raise LatentgeoError("no encoder given; pass --encoder SPEC (repeat for several) or --code "
                                 "module:factory")
        hint = "the --out folder of `latentgeo train ae`, a diffusers AutoencoderKL folder"
        for e in encoder:
            if not Path(e).exists():
                raise LatentgeoError(f"--encoder '{e}' does not exist; train one with `latentgeo train ae --out DIR` "
                                     f"or pass a diffusers AutoencoderKL folder (accepted: {ACCEPTED})")
        if pixel_denoiser is not None and not Path(pixel_denoiser).exists() \
                and not Path(pixel_denoiser + ".safetensors").exists():
            raise LatentgeoError(f"--pixel-denoiser '{pixel_denoiser}' does not exist; pass a folder or .safetensors "
                                 "file of a denoiser trained on the normalised data (or another model spec: "
                                 f"{ACCEPTED}), or drop the option")
        if pixel_denoiser is not None and not Path(pixel_denoiser).exists():
            pixel_denoiser = pixel_denoiser + ".safetensors"
        # names: the folder names (made unique), then the --code factory
        names = {}
        for e in encoder:
            nm = re.sub(r"[^\w.-]", "_", Path(e).name) or "encoder"
            while nm in names:
                nm += "_"
            names[nm] = e
        if model_opts.code is not None:
            nm = re.sub(r"[^\w.-]", "_", model_opts.code)
            while nm in names:
                nm += "_"
            names[nm] = None
        lat = {}
        for item in latent_denoiser or []:
            key, sep, spec = str(item).partition("=")
            if not sep or not key or not spec:
                raise LatentgeoError(f"--latent-denoiser must look like NAME=SPEC (NAME one of: "
                                     f"{', '.join(names)}), got '{item}'; pass e.g. --latent-denoiser {names[0] if names else 'NAME'}=RUN_DIR")
            if key not in names:
                raise LatentgeoError(f"--latent-denoiser names encoder '{key}', which is not among the encoders "
                                     f"({', '.join(names)}); use one of those names")
            if not Path(spec).exists():
                raise LatentgeoError(f"--latent-denoiser {key}: '{spec}' does not exist; pass a denoiser trained on "
                                     f"the encoder's normalised latents ({ACCEPTED})")
            lat[key] = spec
        from latentgeo.fisher.diagnosis import diagnose

        dev = _device(device)
        if quick:
            steps, n_eval, probes, n_sigmas = min(steps, 200), min(n_eval, 64), 2, 6
        x, note = _load_upto(data, min(n, 400) if (quick and n is not None) else n, seed,
                             400 if quick else DIAGNOSE_N)
        if note:  # on stdout: stderr stays for the one-line error of a refused run
            typer.echo(note)
        y = _diagnose_labels(labels, data, x, seed)
        lshape = None
        if latent_shape is not None:
            try:
                lshape = tuple(int(v) for v in latent_shape.split(","))
            except ValueError:
                raise LatentgeoError(f"--latent-shape must look like C,H,W (e.g. 4,7,7), got '{latent_shape}'; pass three positive integers") \
                    from None
        # data vs encoders from the configs alone (1-channel data into a 3-channel VAE: one line in a second), then
        # every model is resolved (a bad one fails in seconds) and checked against the data, before any training
        for nm, e in names.items():
            precheck_input(e, tuple(x.shape[1:]), model_opts, what=f"--encoder {nm}")
        encs, infos, decs = {}, {}, {}
        for nm, e in names.items():
            enc, dec, info = resolve_model("encoder", e, model_opts, code=e is None, device="cpu",
                                           what="--encoder" if e is not None else "--code", hint=hint)
            encs[nm], infos[nm] = enc, info
            if dec is not None:
                decs[nm] = dec
        pden = None
        if pixel_denoiser is not None:
            pden = resolve_model("denoiser", pixel_denoiser, model_opts, code=False, device=dev,
                                 what="--pixel-denoiser")
        lat = {k: resolve_model("denoiser", v, model_opts, code=False, device=dev, what=f"--latent-denoiser {k}")
               for k, v in lat.items()}
        for nm, enc in encs.items():
            try:
                check_input_shape(enc, tuple(x.shape[1:]))
            except LatentgeoError as exc:
                raise LatentgeoError(f"--encoder {nm}: {exc}") from None
            rng = infos[nm].get("input_range")
            if rng and (float(x.min()) < rng[0] - 1e-3 or float(x.max()) > rng[1] + 1e-3):
                typer.echo(f"note: '{data}' has values in [{float(x.min()):.3g}, {float(x.max()):.3g}] but encoder "
                           f"'{nm}' expects images in [{rng[0]:g}, {rng[1]:g}]")
        if net == "unet" and x.ndim != 4:
            raise LatentgeoError(f"--net unet needs images [N, C, H, W] but '{data}' has shape {tuple(x.shape)}; use "
                                 "--net mlp")
        if not fisher and (pden is not None or lat):
            raise LatentgeoError("--no-fisher skips the denoisers, so --pixel-denoiser / --latent-denoiser would "
                                 "not be used; drop them or drop --no-fisher")
        s = diagnose(encs, x, out=out, data_name=data, n_sigmas=n_sigmas, n_eval=n_eval, n_probes=probes,
                     steps=steps, net=net, pixel_denoiser=pden, latent_denoisers=lat or None, seed=seed,
                     progress=True, net_kwargs={"hidden": 64, "depth": 2} if quick else None, device=dev,
                     decoders=decs, fisher=fisher, n_geometry=min(n_geometry, x.shape[0]), labels=y,
                     latent_shape=lshape, n_generation=n_generation, reference_flow_steps=reference_flow_steps,
                     classifier_steps=60 if quick else 300)
        from latentgeo.report.diffusability import write_diagnosis_report

        html = write_diagnosis_report(out, s)
        typer.echo(s["verdict"]["summary"])
        for line in s["verdict"]["details"]:
            typer.echo("  " + line)
        typer.echo(f"wrote {html} and {out}/summary.json")
