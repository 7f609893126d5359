"""CLI of the molecules area: ``latentgeo tps alanine|mueller-brown --paths P --out DIR``."""
from __future__ import annotations

from typing import Optional

import typer


def _avoid(text: Optional[str]):
    from latentgeo.errors import LatentgeoError

    if not text:
        return None
    try:
        x, y, s = (float(t) for t in text.split(","))
    except ValueError:
        raise LatentgeoError(f"--avoid must be 'x,y,sigma' (three numbers), got '{text}'; e.g. --avoid -1.5,0.5,0.3")
    if not s > 0:
        raise LatentgeoError(f"--avoid sigma must be positive, got {s}")
    return ((x, y), s)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo tps`` to the root app."""

    @app.command("tps")
    def tps(
        system: str = typer.Argument(..., help="alanine | mueller-brown"),
        paths: int = typer.Option(1000, "--paths", help="number of transition paths P"),
        out: str = typer.Option(..., "--out", help="output folder (paths.npz, summary.json, paths.png)"),
        denoiser: str = typer.Option("mlp", "--denoiser", help="mlp (trained here) | kde (training-free)"),
        n_points: Optional[int] = typer.Option(None, "--n-points", help="geodesic points N (default 128)"),
        k_steps: Optional[int] = typer.Option(None, "--k-steps", help="Langevin steps per geodesic point K (64)"),
        geo_steps: Optional[int] = typer.Option(None, "--geo-steps", help="Adam steps of the geodesic (1000)"),
        train_steps: Optional[int] = typer.Option(None, "--train-steps", help="denoiser training steps (3000)"),
        snr_penalty: float = typer.Option(0.0, "--snr-penalty", help="low-SNR penalty weight (REFERENCE: 100)"),
        snr_lambda: float = typer.Option(3.0, "--snr-lambda",
                                         help="log-SNR the penalty keeps the geodesic above (REFERENCE: 3)"),
        avoid: Optional[str] = typer.Option(None, "--avoid", help="forbidden spacetime state 'x,y,sigma'"),
        avoid_weight: float = typer.Option(100.0, "--avoid-weight", help="weight of the region-avoidance penalty"),
        data_kt: Optional[float] = typer.Option(None, "--data-kt",
                                                help="temperature of the training-data Langevin (default 1)"),
        scheme: str = typer.Option("em", "--scheme",
                                   help="annealed-Langevin integrator: em (Euler-Maruyama, the paper's) | lm "
                                        "(Leimkuhler-Matthews: same cost, more accurate kT sampling)"),
        quick: bool = typer.Option(False, "--quick", help="tiny settings for a smoke test"),
        no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the string-method baseline"),
        seed: int = typer.Option(0, "--seed"),
        compile_geodesic: bool = typer.Option(False, "--compile",
                                              help="fuse each geodesic step with TorchInductor (about 3x faster per "
                                                   "step in 2-D; the first compile of a shape takes up to a minute)"),
    ) -> None:
        """Transition paths through a diffusion model's spacetime: Boltzmann data -> denoiser -> geodesic ->
        annealed Langevin; writes DIR/paths.npz ([P, T, 2], radians in [-pi, pi) for alanine), DIR/summary.json and
        DIR/paths.png."""
        import torch

        from latentgeo.errors import LatentgeoError, check_choice
        from latentgeo.molecules.run import SYSTEMS, run_tps

        check_choice(system, SYSTEMS, "system")
        check_choice(denoiser, ("mlp", "kde"), "denoiser")
        check_choice(scheme, ("em", "lm"), "--scheme")
        if data_kt is not None and not data_kt > 0:
            raise LatentgeoError(f"--data-kt must be positive, got {data_kt}")
        if paths < 1:
            raise LatentgeoError(f"--paths must be at least 1, got {paths}")
        torch.set_num_threads(max(1, torch.get_num_threads()))
        s = run_tps(system, paths, out, quick=quick, baselines=not no_baselines, snr_penalty=snr_penalty,
                    avoid=_avoid(avoid), avoid_weight=avoid_weight, seed=seed,
                    progress=lambda m: typer.echo(f"  {m}", err=True), denoiser=denoiser, n_points=n_points,
                    k_steps=k_steps, geo_steps=geo_steps, train_steps=train_steps, data_kT=data_kt,
                    geo_compile=compile_geodesic, snr_lambda=snr_lambda, scheme=scheme)
        typer.echo(f"MaxEnergy {s['max_energy_mean']:.2f} +- {s['max_energy_std']:.2f} (lower bound "
                   f"{s['lower_bound']:.2f}); {s['energy_evaluations']:,} gradient evaluations; "
                   f"{s['seconds']:.1f} s; wrote {out}/paths.npz, summary.json, paths.png")
