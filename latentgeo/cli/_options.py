"""The option layer every command shares: typed, range-checked options that fail at parse time.

Each factory returns a ``typer.Option`` whose callback validates the value *before the command body runs*, so bad
input gets one line (``error: ...; fix``, exit 2) before any data is loaded or any model trained. Use them instead of
bare ``typer.Option`` for anything numeric, a device, or an output path::

    steps: int = opt_int(10000, "--steps", help="Total optimiser steps.", lo=0, hi=MAX_STEPS)
    lr: float = opt_float(2e-3, "--lr", help="Adam learning rate.", lo=0, lo_open=True)
    out: str = opt_out_dir(..., help="Output folder.")
    device: str = opt_device()

Validators (``valid_int``, ``valid_float``, ``valid_device``, ``valid_floats``) are plain functions too, for values
that arrive another way (comma lists, config files).
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

import typer

from latentgeo.errors import LatentgeoError

__all__ = ["opt_int", "opt_float", "opt_device", "opt_out_dir", "opt_out_file", "opt_threads", "valid_int",
           "valid_float", "valid_device", "valid_floats", "MAX_STEPS", "MAX_WIDTH", "MAX_SAMPLES"]

# Upper bounds that no run on any machine reaches; they turn typos (1e12, 1000000000) into errors instead of
# out-of-memory crashes or runs that never end.
MAX_STEPS = 100_000_000
MAX_WIDTH = 65_536
MAX_SAMPLES = 100_000_000


def valid_int(value: Optional[int], name: str, lo: Optional[int] = None, hi: Optional[int] = None) -> Optional[int]:
    """``value`` if ``lo <= value <= hi`` (None passes), else a one-line :class:`LatentgeoError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LatentgeoError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise LatentgeoError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise LatentgeoError(f"{name} must be <= {hi:,}, got {value:,}; use a smaller value")
    return value


def valid_float(value: Optional[float], name: str, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False, hi_open: bool = False) -> Optional[float]:
    """``value`` if finite and in the range (open ends with ``lo_open`` / ``hi_open``; None passes)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LatentgeoError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise LatentgeoError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise LatentgeoError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise LatentgeoError(f"{name} must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def valid_floats(text: Optional[str], name: str, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, count: Optional[int] = None) -> Optional[List[float]]:
    """Parse ``'0.1,0.2'`` into finite floats in range (``count``: exact number wanted); None/empty -> None."""
    if text is None or not str(text).strip():
        return None
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise LatentgeoError(f"{name} must be comma-separated numbers like '0.1,0.2', got '{text}'") from None
    if count is not None and len(vals) != count:
        raise LatentgeoError(f"{name} needs {count} comma-separated numbers, got {len(vals)} ('{text}')")
    for v in vals:
        valid_float(v, name, lo=lo, hi=hi, lo_open=lo_open)
    return vals


def valid_device(value: Optional[str], name: str = "--device") -> Optional[str]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:K`` (and ``mps``), checked against what this machine has."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("auto", "cpu"):
        return v
    import torch

    if v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()):
        if not torch.cuda.is_available():
            raise LatentgeoError(f"{name} {value}: CUDA is not available on this machine; use --device cpu "
                                 "(or auto)")
        if ":" in v and int(v[5:]) >= torch.cuda.device_count():
            raise LatentgeoError(f"{name} {value}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                                 f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return v
    if v == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LatentgeoError(f"{name} mps: MPS is not available on this machine; use --device cpu")
        return v
    raise LatentgeoError(f"unknown {name} '{value}'; choose auto, cpu, cuda or cuda:K")


def _cb(fn):
    """Wrap a validator as a click callback (click passes ``(ctx, param, value)``); skip during --help."""
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if ctx is not None and getattr(ctx, "resilient_parsing", False):
            return value
        return fn(value)
    return callback


def opt_int(default: Any, *names: str, help: str = "", lo: Optional[int] = 1, hi: Optional[int] = None,
            **kw: Any) -> Any:
    """An integer option in ``[lo, hi]`` (default range: positive)."""
    name = names[0] if names else "value"
    return typer.Option(default, *names, help=help, callback=_cb(lambda v: valid_int(v, name, lo, hi)), **kw)


def opt_float(default: Any, *names: str, help: str = "", lo: Optional[float] = None, hi: Optional[float] = None,
              lo_open: bool = False, hi_open: bool = False, **kw: Any) -> Any:
    """A finite float option in the range (NaN and inf are always refused)."""
    name = names[0] if names else "value"
    return typer.Option(default, *names, help=help,
                        callback=_cb(lambda v: valid_float(v, name, lo, hi, lo_open, hi_open)), **kw)


def opt_device(default: str = "auto", help: str = "auto (CUDA when available) | cpu | cuda | cuda:K.") -> Any:
    return typer.Option(default, "--device", help=help, callback=_cb(valid_device))


def opt_out_dir(default: Any, *names: str, help: str = "Output folder.", **kw: Any) -> Any:
    """An output folder, checked (file in the way, below a file, not writable) before the command starts."""
    from latentgeo.runfolder import check_output_dir

    names = names or ("--out",)
    return typer.Option(default, *names, help=help,
                        callback=_cb(lambda v: v if v is None else (check_output_dir(v, names[0]) and v)), **kw)


def opt_out_file(default: Any, *names: str, help: str = "Output file.", **kw: Any) -> Any:
    from latentgeo.runfolder import check_output_file

    names = names or ("--out",)
    return typer.Option(default, *names, help=help,
                        callback=_cb(lambda v: v if v is None else (check_output_file(v, names[0]) and v)), **kw)


def opt_threads(help: str = "Torch threads (default: from the cores this process may use and the load; "
                            "env LATENTGEO_THREADS).") -> Any:
    return opt_int(None, "--threads", help=help, lo=1, hi=4096)


# ---------------------------------------------------------------------------------------------------- additions

#: Seeds are fed to torch generators (and offset per split / step): keep them in a range every one accepts.
MAX_SEED = 2 ** 32 - 1
#: Minibatch / sampler batch sizes above this are typos, not settings (they only end in out-of-memory crashes).
MAX_BATCH = 1_048_576


def opt_seed(default: int = 0, *names: str, help: str = "Random seed (0 .. 2^32-1).", **kw: Any) -> Any:
    """A seed option in ``[0, MAX_SEED]``."""
    return opt_int(default, *(names or ("--seed",)), help=help, lo=0, hi=MAX_SEED, **kw)


def read_json_file(path: Any, fix: str = "delete it (or restore it from a backup) and re-run the command that "
                                         "wrote it") -> dict:
    """The JSON object in file ``path``; a missing, unreadable, corrupt or non-object file raises one line
    naming the file and ``fix`` (see :func:`latentgeo.runfolder.read_json`)."""
    from latentgeo.runfolder import read_json

    return read_json(path, fix=fix, want_object=True)
