"""``latentgeo data``: list the data sets and check that one loads (size, shape, range, hash)."""
from __future__ import annotations

from typing import Optional

import typer

from latentgeo.cli._options import MAX_SAMPLES, opt_int, opt_seed

data_app = typer.Typer(help="Data sets: list them, check that one loads.", no_args_is_help=True)


@data_app.command("list")
def list_datasets() -> None:
    """List the data set names accepted everywhere a data set is asked for."""
    from latentgeo.data import DATASETS

    width = max(len(k) for k in DATASETS)
    for name, desc in DATASETS.items():
        typer.echo(f"{name.ljust(width)}  {desc}")
    typer.echo(f"{'PATH'.ljust(width)}  any .npy/.npz array ([N,D], [N,H,W] or [N,C,H,W]) or folder of PNG files")


@data_app.command("check")
def check(
    name: str = typer.Argument(..., help="Data set name (see `latentgeo data list`) or a .npy/.npz file / PNG folder."),
    path: Optional[str] = typer.Option(None, "--path", help="Folder holding the Fashion-MNIST IDX files."),
    split: str = typer.Option("train", "--split", help="train or test."),
    n: Optional[int] = opt_int(None, "--n", help="Number of samples (synthetic default 10000; else all).", lo=1,
                               hi=MAX_SAMPLES),
    seed: int = opt_seed(0, "--seed", help="Sampling / split seed (0 .. 2^32-1)."),
    pad: bool = typer.Option(False, "--pad", help="Pad 28x28 images to 32x32 with the background value -1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Load a data set and print its size, shape, dtype, range, mean/std and a content hash."""
    from latentgeo.data import describe, is_image, load
    from latentgeo.data.registry import canonical_name
    from latentgeo.errors import LatentgeoError

    if path is not None:
        if canonical_name(name) != "fashion-mnist":
            raise LatentgeoError(f"--path names the folder of the Fashion-MNIST IDX files; '{name}' does not use "
                                 "it, so drop --path")
    x = load(name, split=split, n=n, seed=seed, path=path, pad=pad)
    info = describe(x)
    if as_json:
        import json

        typer.echo(json.dumps({"dataset": name, "split": split, "image": is_image(x), **info}))
        return
    kind = "images [N, C, H, W]" if is_image(x) else "points [N, D]" if x.ndim == 2 else f"rank-{x.ndim} array"
    typer.echo(f"dataset: {name}")
    typer.echo(f"split:   {split}")
    typer.echo(f"kind:    {kind}")
    typer.echo(f"size:    {info['size']}")
    typer.echo(f"shape:   {tuple(info['shape'])}")
    typer.echo(f"dtype:   {info['dtype']}")
    typer.echo(f"range:   [{info['min']:.6g}, {info['max']:.6g}]")
    typer.echo(f"mean:    {info['mean']:.6g}")
    typer.echo(f"std:     {info['std']:.6g}")
    typer.echo(f"hash:    {info['hash']}  (sha256 of the float32 bytes, first 16 hex)")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo data ...`` to the root app."""
    app.add_typer(data_app, name="data")
