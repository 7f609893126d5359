"""CLI commands of this area (registered by latentgeo.cli)."""
from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this area's commands to the root app (and to `latentgeo train`)."""
