"""The ``latentgeo`` command line.

Each capability registers its commands from its own module ``latentgeo/cli/_<area>.py`` through
``register(app, train_app)``, so that areas never edit each other's files. Heavy imports happen inside the
command functions, which keeps ``latentgeo --help`` fast.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Optional

import typer

from latentgeo._version import __version__
from latentgeo.cli._options import opt_threads
from latentgeo.errors import LatentgeoError

app = typer.Typer(
    name="latentgeo",
    help="Geometry of latent diffusion models: GPE encoders, Fisher diagnostics of diffusability, spacetime geodesics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train models (diffusion denoisers, autoencoders).", no_args_is_help=True)
app.add_typer(train_app, name="train")

_DEBUG = {"on": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"latentgeo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True,
                                           help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: Optional[int] = opt_threads(),
) -> None:
    _DEBUG["on"] = debug or bool(os.environ.get("LATENTGEO_DEBUG"))
    _DEBUG["threads"] = threads


def _with_threads(fn):
    """Wrap a command so that the torch thread count is chosen (``latentgeo.threads.apply_threads``: --threads,
    $LATENTGEO_THREADS, $OMP_NUM_THREADS, else from the usable cores and the load) after its options are parsed and
    checked and before it does any work — one place for every command, and no torch import for a bad option."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        from latentgeo.threads import apply_threads

        apply_threads(_DEBUG.get("threads"))
        return fn(*args, **kwargs)

    return run


def _wrap_commands(t: typer.Typer) -> None:
    for info in t.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_latentgeo_threads", False):
            info.callback = _with_threads(info.callback)
            info.callback._latentgeo_threads = True
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


from latentgeo.cli import _data, _diffusion, _gpe, _fisher, _spacetime, _tps, _demo  # noqa: E402

for _mod in (_data, _diffusion, _gpe, _fisher, _spacetime, _tps, _demo):
    _mod.register(app, train_app)
_wrap_commands(app)


_INTERRUPTED = ("error: interrupted; checkpoints already written are kept; resume with --resume "
                "(same command and --out)")
_INTERRUPTED_NO_RESUME = ("error: interrupted; this command cannot be resumed (files it finished before the "
                          "interruption are kept); run it again to start over")


def _interrupted_message(argv: Optional[list]) -> str:
    """The Ctrl-C line: it offers ``--resume`` only when the interrupted command has that option."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        cmd = typer.main.get_command(app)
        for tok in args:
            subs = getattr(cmd, "commands", None)
            if not subs:
                break
            if tok in subs:
                cmd = subs[tok]
        resumable = not getattr(cmd, "commands", None) and any(
            "--resume" in getattr(p, "opts", ()) for p in getattr(cmd, "params", ()))
    except Exception:  # never let the message itself fail: say nothing about resuming
        resumable = False
    return _INTERRUPTED if resumable else _INTERRUPTED_NO_RESUME


def main(argv: Optional[list] = None) -> None:
    """Console entry point: user errors become one line ``error: ...`` and exit code 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into Exit(130), which standalone_mode=False returns instead of raising
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except LatentgeoError as exc:
        if _DEBUG["on"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if _DEBUG["on"]:
            raise
        typer.echo(f"error: cannot access '{exc.filename}': {exc.strerror}; check the path and its permissions",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo(_interrupted_message(argv), err=True)
        sys.exit(130)
    except typer.Exit as exc:
        if exc.exit_code == 130:
            typer.echo(_interrupted_message(argv), err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, read-only file system, ...: name the path, keep what was written
        if _DEBUG["on"]:
            raise
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        typer.echo(f"error: cannot write{where}: {exc.strerror or exc}; free space or choose another --out "
                   "(files written earlier are kept)", err=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors (typer vendors its own click, so duck-type them)
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if _DEBUG["on"]:
                raise
            msg = " ".join(exc.format_message().split()).rstrip(".")
            typer.echo(f"error: {msg}; see 'latentgeo --help'", err=True)
            sys.exit(2)
        raise

if __name__ == "__main__":
    main()
