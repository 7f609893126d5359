"""CLI of the Fisher diagnostics: ``latentgeo fisher toy|curves`` and ``latentgeo diagnose``."""
from __future__ import annotations

from typing import List, Optional

import typer

from latentgeo.errors import LatentgeoError


def _floats(text: Optional[str], what: str) -> Optional[List[float]]:
    if text is None or not text.strip():
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LatentgeoError(f"{what} must be comma-separated numbers like '0.1,0.2', got '{text}'") from None


def _threads() -> None:
    import os

    import torch

    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``fisher`` (toy, curves) and ``diagnose`` to the root app."""
    fisher_app = typer.Typer(help="Fisher diagnostics of diffusability: FI / FIR curves and the paper's toys.",
                             no_args_is_help=True)
    app.add_typer(fisher_app, name="fisher")

    @fisher_app.command("toy")
    def toy(
        name: str = typer.Argument(..., help="compression | tangential | curvature"),
        out: str = typer.Option(..., "--out", help="Output folder (toy_<name>.json and PNG plots)."),
        exact: bool = typer.Option(False, "--exact", help="Use the exact denoisers instead of training EDM MLPs."),
        params: Optional[str] = typer.Option(None, "--params",
                                             help="Swept values: d (compression), delta0 (tangential), eps0 "
                                                  "(curvature); comma-separated."),
        steps: int = typer.Option(1500, "--steps", help="Training steps per denoiser (trained mode)."),
        n_train: int = typer.Option(4000, "--n-train", help="Training samples per law (trained mode)."),
        n_eval: int = typer.Option(1000, "--n-eval", help="Samples for the Fisher curves."),
        probes: int = typer.Option(8, "--probes", help="Hutchinson probes per sample."),
        sigmas: Optional[str] = typer.Option(None, "--sigmas", help="Noise levels, comma-separated."),
        dim: int = typer.Option(16, "--dim", help="Data dimension D of the compression toy."),
        omega: float = typer.Option(5.0, "--omega", help="Ripple frequency of the curvature toy."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Run a Fisher toy (data vs latent law) and plot D_R against the exact curves."""
        _threads()
        from latentgeo.fisher.toys import run_toy

        p = _floats(params, "--params")
        if p is not None and name == "compression":
            p = [int(v) for v in p]
        res = run_toy(name, out=out, params=p, denoisers="exact" if exact else "trained", sigmas=_floats(sigmas, "--sigmas"),
                      n_eval=n_eval, n_probes=probes, n_train=n_train, steps=steps, D=dim, omega=omega, seed=seed,
                      progress=True)
        for row in res["rows"]:
            extra = {k: round(v, 4) for k, v in row.items() if isinstance(v, float) and k != "param"}
            typer.echo(f"{row['label']}: D_R at sigma={res['sigma'][0]:.3g} = {row['d_r'][0]:.4f} "
                       f"(exact {row['exact_d_r'][0]:.4f}) {extra}")
        typer.echo(f"wrote {out}/toy_{name}.json and plots")

    @fisher_app.command("curves")
    def curves_cmd(
        denoiser: str = typer.Option(..., "--denoiser", help="Trained denoiser folder or .safetensors file."),
        data: str = typer.Option(..., "--data", help="Data set name or file (see `latentgeo data list`)."),
        out: str = typer.Option(..., "--out", help="Output folder (curves.json, curves.png)."),
        n: int = typer.Option(256, "--n", help="Samples."),
        probes: int = typer.Option(8, "--probes"),
        n_sigmas: int = typer.Option(16, "--n-sigmas"),
        sigma_min: float = typer.Option(0.01, "--sigma-min"),
        sigma_max: float = typer.Option(80.0, "--sigma-max"),
        float64: bool = typer.Option(False, "--float64", help="Compute in float64."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """FI, FIR, MMSE and MMSE-rate curves of a trained denoiser on data (data as the denoiser was trained)."""
        _threads()
        from pathlib import Path

        import torch

        from latentgeo.data import load
        from latentgeo.diffusion import load_denoiser
        from latentgeo.fisher import default_sigmas, fisher_curves

        den = load_denoiser(denoiser)
        x = load(data, n=n, seed=seed)
        c = fisher_curves(den, x, default_sigmas(n_sigmas, sigma_min, sigma_max), n_probes=probes,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64 if float64 else None,
                          label=Path(denoiser).name)
        c.save(Path(out) / "curves.json")
        c.plot(Path(out) / "curves.png")
        for i in range(len(c.sigma)):
            typer.echo(f"sigma={c.sigma[i]:.4g}  I={c.fi[i]:.5g}±{c.fi_se[i]:.2g}  R={c.fir[i]:.5g}±{c.fir_se[i]:.2g}  "
                       f"mmse'={c.mmse_rate[i]:.5g}")
        typer.echo(f"wrote {out}/curves.json and curves.png")

    @app.command("diagnose")
    def diagnose_cmd(
        encoder: List[str] = typer.Option(..., "--encoder", help="Encoder folder (latentgeo autoencoder run or "
                                                                 "diffusers AutoencoderKL); repeat for several."),
        data: str = typer.Option(..., "--data", help="Data set name or file (see `latentgeo data list`)."),
        out: str = typer.Option(..., "--out", help="Output folder: summary.json, plots, cached denoisers."),
        n: int = typer.Option(2000, "--n", help="Training samples for the denoisers."),
        steps: int = typer.Option(2000, "--steps", help="Denoiser training steps (pixels and each latent space)."),
        n_eval: int = typer.Option(256, "--n-eval", help="Samples for the Fisher curves."),
        probes: int = typer.Option(4, "--probes"),
        n_sigmas: int = typer.Option(14, "--n-sigmas"),
        net: str = typer.Option("mlp", "--net", help="Denoiser network: mlp | unet."),
        pixel_denoiser: Optional[str] = typer.Option(None, "--pixel-denoiser",
                                                     help="Reuse a pixel denoiser trained on the normalised data."),
        seed: int = typer.Option(0, "--seed"),
        quick: bool = typer.Option(False, "--quick", help="Tiny settings for a smoke run (minutes on a CPU)."),
    ) -> None:
        """How diffusable is each encoder's latent space compared with the pixels, and why (writes summary.json)."""
        _threads()
        from pathlib import Path

        from latentgeo.data import load
        from latentgeo.fisher.diagnose import diagnose

        if quick:
            n, steps, n_eval, probes, n_sigmas = min(n, 400), min(steps, 200), min(n_eval, 64), 2, 6
        x = load(data, n=n, seed=seed)
        names = {}
        for e in encoder:
            nm = Path(e).name or "encoder"
            while nm in names:
                nm += "_"
            names[nm] = e
        s = diagnose(names, x, out=out, data_name=data, n_sigmas=n_sigmas, n_eval=n_eval, n_probes=probes,
                     steps=steps, net=net, pixel_denoiser=pixel_denoiser, seed=seed, progress=True,
                     net_kwargs={"hidden": 64, "depth": 2} if quick else None)
        typer.echo(s["verdict"]["summary"])
        for line in s["verdict"]["details"]:
            typer.echo("  " + line)
        typer.echo(f"wrote {out}/summary.json and plots")
