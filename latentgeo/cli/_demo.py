"""``latentgeo demo``: the end-to-end tour with an HTML report (registered by latentgeo.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latentgeo.cli._options import opt_out_dir, opt_seed, opt_threads


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo demo`` to the root app."""

    @app.command("demo")
    def demo(
        data: str = typer.Option("digits", "--data", help="digits (embedded, default) or fashion-mnist."),
        out: Path = opt_out_dir(Path("runs/demo"), "--out", help="Run folder for report.html, summary.json and "
                                                                 "the cached feature classifier."),
        quick: bool = typer.Option(False, "--quick", help="Tiny step counts: a 1-2 minute smoke run."),
        seed: int = opt_seed(0, "--seed", help="Seed of every stage (0 .. 2^32-1)."),
        threads: Optional[int] = opt_threads(help="torch threads, 1 .. 4096 (default: $LATENTGEO_THREADS, else "
                                                  "chosen from the cores this process may use and the load)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Train GPE and VAE, diffusion models, Fisher curves, a spacetime geodesic and latent generation on a small
        image set, and write a self-contained HTML report (under 10 minutes on 2 CPU cores for digits)."""
        from latentgeo.demo import run_demo

        path = run_demo(data=data, out=out, seed=seed, budget="quick" if quick else "full",
                        progress=not no_progress, threads=threads)
        typer.echo(str(path))
