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
        raise LatentgeoError(f"{name} must be an integer, got {value!r}; pass a whole number")
    if lo is not None and value < lo:
        raise LatentgeoError(f"{name} must be >= {lo:,}, got {value:,}; pass {lo:,} or more")
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
        raise LatentgeoError(f"{name} must be a number, got {value!r}; pass e.g. {name} 0.5") from None
    if not math.isfinite(v):
        raise LatentgeoError(f"{name} must be a finite number, got {value!r}; pass an ordinary number")
    # v == lo also holds for -0.0 == 0: "-0" is refused where "> 0" is asked for
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise LatentgeoError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}; pass a value "
                             f"{'above' if lo_open else 'of at least'} {lo:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise LatentgeoError(f"{name} must be {'<' if hi_open else '<='} {hi:g}, got {value!r}; pass a value "
                             f"{'below' if hi_open else 'of at most'} {hi:g}")
    return v


def valid_floats(text: Optional[str], name: str, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, count: Optional[int] = None) -> Optional[List[float]]:
    """Parse ``'0.1,0.2'`` into finite floats in range (``count``: exact number wanted); None/empty -> None."""
    if text is None or not str(text).strip():
        return None
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise LatentgeoError(f"{name} must be comma-separated numbers, got '{text}'; pass e.g. '0.1,0.2'") from None
    if count is not None and len(vals) != count:
        raise LatentgeoError(f"{name} needs {count} comma-separated numbers, got {len(vals)} ('{text}'); pass "
                             f"exactly {count}")
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
            raise LatentgeoError(f"{name} mps: MPS is not available on this machine; use --device cpu (or auto)")
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


# ---------------------------------------------------------------------------------------- model-spec options
#
# "Bring your own model": every command that takes a model resolves it through latentgeo.resolve with the same
# options. ``@model_spec_options(role)`` adds them to a command (parse-time checked) and hands the command one
# ``model_opts: ModelOptions``; :func:`resolve_model` is the one place that calls the resolver.

#: Which options each kind of model takes.
_ROLE_OPTIONS = {
    "encoder": ("subfolder", "allow_pickle", "allow_torchscript", "code"),
    "denoiser": ("parametrization", "schedule", "sigma_data", "time_scale", "subfolder", "allow_pickle",
                 "allow_torchscript", "extrapolate", "code"),
}
_ROLE_OPTIONS["model"] = _ROLE_OPTIONS["denoiser"]  # a denoiser or a flow (``sample``)

_OPTION_HELP = {
    "parametrization": "What the model predicts, for TorchScript / export / --code models (diffusers folders read "
                       "it from scheduler/): ve | edm | eps | v | x0 | velocity (SD3/FLUX rectified flow) | "
                       "velocity_latentgeo.",
    "schedule": "Noise schedule of a VP model without a scheduler/ folder: ddpm | sd | cosine | vp_sde | log_snr, "
                "a diffusers scheduler folder or scheduler_config.json, or a JSON object of scheduler keys.",
    "sigma_data": "Data std of an EDM-preconditioned model (--parametrization edm).",
    "time_scale": "Scale of the model's time input (e.g. 1000 for a flow model that takes t in [0, 1000]).",
    "subfolder": "Component of a diffusers pipeline folder to load (e.g. unet, vae; default: found).",
    "allow_pickle": "Also load pickled .bin weights (torch.load(weights_only=True)) and torch.export .pt2 files; "
                    "only for files you trust.",
    "allow_torchscript": "Also load TorchScript .pt/.ts files. TorchScript is code (its __setstate__ runs while "
                         "loading, its forward is the file's program): only for files you trust.",
    "extrapolate": "Evaluate the model outside the noise range it was trained on instead of refusing.",
    "code": "module:factory -- build the model with your own Python code (imported only because you name it "
            "here; never from a file).",
}

_SUBFOLDER_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


def valid_parametrization(value: Optional[str], name: str = "--parametrization") -> Optional[str]:
    if value is None:
        return None
    from latentgeo.resolve import PARAMETRIZATIONS

    v = str(value).strip()
    if v not in PARAMETRIZATIONS:
        raise LatentgeoError(f"unknown {name} '{value}'; choose one of: ve, edm, eps, v, x0, velocity, "
                             "velocity_latentgeo (diffusers' epsilon, v_prediction, sample also work)")
    return v


def valid_schedule(value: Optional[str], name: str = "--schedule") -> Any:
    """A preset name, an existing scheduler folder / file, or a JSON object (returned as a dict)."""
    if value is None:
        return None
    from pathlib import Path

    from latentgeo.resolve import SCHEDULE_PRESETS

    v = str(value).strip()
    if v.startswith("{"):
        from latentgeo.runfolder import loads_json

        example = "pass e.g. '{\"beta_schedule\": \"linear\"}'"
        d = loads_json(v, f"{name} JSON", example, max_depth=8)  # refuses deep nesting before parsing
        if not isinstance(d, dict):
            raise LatentgeoError(f"{name} JSON must be an object of scheduler keys; {example}")
        return d
    if v in SCHEDULE_PRESETS or Path(v).expanduser().exists():
        return v
    if v == "scaled_linear":
        return v  # the resolver says which betas to pass ('sd')
    raise LatentgeoError(f"unknown {name} '{value}'; choose one of: {', '.join(SCHEDULE_PRESETS)}, a diffusers "
                         "scheduler folder or scheduler_config.json, or a JSON object of scheduler keys")


def valid_subfolder(value: Optional[str], name: str = "--subfolder") -> Optional[str]:
    import re

    if value is None:
        return None
    v = str(value).strip().strip("/")
    if not re.match(_SUBFOLDER_RE, v) or v in (".", ".."):
        raise LatentgeoError(f"{name} must be the name of one component folder, got '{value}'; pass e.g. "
                             f"{name} unet or {name} vae")
    return v


def valid_code(value: Optional[str], name: str = "--code") -> Optional[str]:
    import re

    if value is None:
        return None
    v = str(value).strip()
    if not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", v):
        raise LatentgeoError(f"{name} must name a function called with no arguments that returns the model, got "
                             f"'{value}'; pass it as 'package.module:factory'")
    return v


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class ModelOptions:
    """The model-spec options of one command line (see :func:`model_spec_options`)."""

    parametrization: Optional[str] = None
    schedule: Any = None
    sigma_data: Optional[float] = None
    time_scale: Optional[float] = None
    subfolder: Optional[str] = None
    allow_pickle: bool = False
    extrapolate: bool = False
    code: Optional[str] = None
    allow_torchscript: bool = False

    def kwargs(self, role: str, code: bool = True, recorded: bool = False) -> dict:
        """Keyword arguments of ``resolve_denoiser`` (role ``denoiser``), ``resolve_flow`` (``flow``) or
        ``resolve_encoder`` (``encoder``). ``code`` is included only with ``code=True`` -- pass that only where
        the model IS the one ``--code`` names (never for a model read from a file). ``recorded=True`` (a spec read
        from a file): the allow flags are off whatever the command line says."""
        keys = {"denoiser": ("parametrization", "schedule", "sigma_data", "time_scale", "subfolder", "allow_pickle",
                             "allow_torchscript", "extrapolate"),
                "flow": ("parametrization", "time_scale", "subfolder", "allow_pickle", "allow_torchscript"),
                "encoder": ("subfolder", "allow_pickle", "allow_torchscript")}[role]
        kw = {k: getattr(self, k) for k in keys}
        if recorded:
            kw.update(allow_pickle=False, allow_torchscript=False)
        if code and not recorded:
            kw["code"] = self.code
        return kw


def model_spec_options(role: str = "denoiser", help: Optional[dict] = None):
    """Decorator: add the model-spec options of ``role`` (``denoiser`` / ``model``: all eight; ``encoder``:
    ``--subfolder``, ``--allow-pickle``, ``--code``) to a typer command, each checked at parse time, and pass the
    command ``model_opts: ModelOptions`` instead of the separate values."""
    import functools
    import inspect

    names = _ROLE_OPTIONS[role]
    texts = {**_OPTION_HELP, **(help or {})}
    specs = {
        "parametrization": (Optional[str], lambda: typer.Option(None, "--parametrization",
                                                                help=texts["parametrization"],
                                                                callback=_cb(valid_parametrization))),
        "schedule": (Optional[str], lambda: typer.Option(None, "--schedule", help=texts["schedule"],
                                                         callback=_cb(valid_schedule))),
        "sigma_data": (Optional[float], lambda: opt_float(None, "--sigma-data", help=texts["sigma_data"], lo=0,
                                                          lo_open=True, hi=1e6)),
        "time_scale": (Optional[float], lambda: opt_float(None, "--time-scale", help=texts["time_scale"], lo=0,
                                                          lo_open=True, hi=1e9)),
        "subfolder": (Optional[str], lambda: typer.Option(None, "--subfolder", help=texts["subfolder"],
                                                          callback=_cb(valid_subfolder))),
        "allow_pickle": (bool, lambda: typer.Option(False, "--allow-pickle", help=texts["allow_pickle"])),
        "allow_torchscript": (bool, lambda: typer.Option(False, "--allow-torchscript",
                                                         help=texts["allow_torchscript"])),
        "extrapolate": (bool, lambda: typer.Option(False, "--extrapolate", help=texts["extrapolate"])),
        "code": (Optional[str], lambda: typer.Option(None, "--code", help=texts["code"], callback=_cb(valid_code))),
    }

    def deco(fn):
        sig = inspect.signature(fn)
        if "model_opts" not in sig.parameters:
            raise TypeError(f"{fn.__name__} needs a 'model_opts' parameter to use @model_spec_options")
        params = [p for p in sig.parameters.values() if p.name != "model_opts"]
        taken = {p.name for p in params}
        clash = [n for n in names if n in taken]
        if clash:
            raise TypeError(f"{fn.__name__} already has parameter(s) {clash}")
        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=specs[n][1](), annotation=specs[n][0])
                 for n in names]
        kinds = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(fn)
        def wrapper(*args, **kw):
            vals = {n: kw.pop(n) for n in names if n in kw}
            return fn(*args, model_opts=ModelOptions(**vals), **kw)

        wrapper.__signature__ = sig.replace(parameters=kinds + extra)
        ann = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "model_opts"}
        wrapper.__annotations__ = {**ann, **{n: specs[n][0] for n in names}}
        return wrapper

    return deco


def resolve_model(role: str, spec: Any, opts: Optional[ModelOptions] = None, *, code: bool = True,
                  recorded: bool = False, device: Any = "cpu", what: Optional[str] = None,
                  hint: Optional[str] = None, **extra: Any):
    """The one call from the CLI into :mod:`latentgeo.resolve`: ``resolve_denoiser`` (role ``denoiser``),
    ``resolve_flow`` (``flow``) or ``resolve_encoder`` (``encoder``; returns ``(encoder, decoder, info)``) for
    ``spec`` with the command line's ``opts``. ``code=False`` for a spec read from a file (a run's record): then
    ``--code`` is never used. The resolver's one-line error (which lists what is accepted) is kept whole; ``what``
    (e.g. ``--denoiser``) is put in front of it; ``hint`` (e.g. "the --out folder of `latentgeo train ae`") is
    named first when the path does not exist. ``recorded=True``: ``spec`` was read from a file (a run's record),
    so it must name a latentgeo safetensors run or a diffusers folder (:func:`latentgeo.resolve.check_recorded_spec`)
    and no --allow-* flag or --code applies to it."""
    from latentgeo import resolve as R

    opts = opts or ModelOptions()
    kw = opts.kwargs(role, code=code and not recorded, recorded=recorded)
    if recorded:
        R.check_recorded_spec(spec, role, what or "the run's record")
    if role == "flow":
        bad = [n for n, v in (("--schedule", opts.schedule), ("--sigma-data", opts.sigma_data),
                              ("--extrapolate", opts.extrapolate)) if v not in (None, False)]
        if bad:
            raise LatentgeoError(f"{', '.join(bad)} do(es) not apply to a flow model (it is sampled as a velocity "
                                 "field); drop it")
    fn = {"denoiser": R.resolve_denoiser, "flow": R.resolve_flow, "encoder": R.resolve_encoder}[role]
    if spec is not None and not isinstance(spec, dict):
        spec = str(spec)
    if kw.get("code") is not None and spec is not None:
        raise LatentgeoError(f"{what or 'a model'} and --code {kw['code']} were both given (not both can be "
                             "loaded); pass only one of them")
    if hint:
        check_model_path(spec, what, hint)
    try:
        return fn(spec, **kw, device=device, **extra)
    except LatentgeoError as exc:
        if what and not str(exc).startswith(what):
            raise LatentgeoError(f"{what}: {exc}") from None
        raise


def check_model_path(spec: Any, what: Optional[str], hint: str) -> None:
    """One line when the model path ``spec`` does not exist: what to pass (``hint`` first, then everything the
    resolver accepts)."""
    from pathlib import Path

    if isinstance(spec, (str, Path)) and not Path(str(spec)).expanduser().exists():
        from latentgeo.resolve import ACCEPTED

        raise LatentgeoError(f"{what + ' ' if what else ''}'{spec}' does not exist; pass {hint}, or any of: "
                             f"{ACCEPTED}")


def model_kind(spec: Any) -> str:
    """What a model spec names, from the file system only (nothing is loaded): ``latentgeo`` (a latentgeo run
    folder or ``.safetensors`` checkpoint), ``diffusers`` (a pipeline or model folder), ``file`` (TorchScript /
    export), ``missing`` or ``other``. Commands use it to pick defaults (e.g. where outputs go) before loading."""
    from pathlib import Path

    if spec is None:
        return "other"
    if isinstance(spec, dict):
        spec = spec.get("path")
        if not isinstance(spec, str):
            return "other"
    p = Path(str(spec)).expanduser()
    if not p.exists():
        return "missing"
    if p.is_file():
        return "latentgeo" if p.suffix.lower() == ".safetensors" else "file"
    from latentgeo.resolve import _is_diffusers_model_dir, _pipeline_components

    try:
        if (p / "model_index.json").is_file() or _is_diffusers_model_dir(p) or _pipeline_components(p) is not None:
            return "diffusers"
    except LatentgeoError:  # a damaged model_index.json: still a diffusers folder (the resolver says what is wrong)
        return "diffusers"
    return "latentgeo"


def default_out(spec: Any, sub: str, given: Optional[str], option: str = "--out"):
    """Where a command writes: ``given``, else ``RUN/<sub>`` for a latentgeo run folder (the folder latentgeo
    wrote). External models (diffusers folders, files, --code) get no default: latentgeo does not write into
    model folders it did not create, so ``option`` is asked for -- before any work."""
    from pathlib import Path

    if given:
        return Path(given)
    kind = model_kind(spec)
    if kind == "missing":
        from latentgeo.resolve import ACCEPTED

        raise LatentgeoError(f"'{spec}' does not exist; pass {ACCEPTED}")
    if kind == "latentgeo":
        p = Path(str(spec if not isinstance(spec, dict) else spec["path"])).expanduser()
        return (p if p.is_dir() else p.parent) / sub
    what = "the --code model" if spec is None else f"'{spec}'"
    raise LatentgeoError(f"{what} is not a latentgeo run folder, and latentgeo does not write into model folders "
                         f"it did not create; pass {option} DIR")


def model_range(model: Any):
    """``(sigma_min, sigma_max)`` a denoiser was trained on (``(0, inf)`` when it does not say)."""
    lo = getattr(model, "sigma_min", None)
    hi = getattr(model, "sigma_max", None)
    lo = float(lo) if isinstance(lo, (int, float)) and math.isfinite(lo) and lo >= 0 else 0.0
    hi = float(hi) if isinstance(hi, (int, float)) and hi > lo else math.inf
    return lo, hi


def check_sigmas(model: Any, values: dict, extrapolate: bool = False) -> None:
    """Refuse (one line, naming the model's trained range) command-line noise levels ``{"--name": value}`` outside
    the range of ``model`` -- before any work; ``--extrapolate`` lets them through."""
    if extrapolate or getattr(model, "extrapolate", False):
        return
    from latentgeo.diffusion.wrappers import RANGE_RTOL as rtol  # the adapters' own tolerance

    lo, hi = model_range(model)
    for name, v in values.items():
        if v is None:
            continue
        if v < lo * (1 - rtol) or v > hi * (1 + rtol):
            raise LatentgeoError(f"{name} {v:g} lies outside the noise range the model was trained on, "
                                 f"[{lo:.4g}, {hi:.4g}]; choose a value in that range or pass --extrapolate to "
                                 "evaluate the model outside it")


def sigma_grid(model: Any, sigma_min: Optional[float] = None, sigma_max: Optional[float] = None,
               extrapolate: bool = False, default=(0.01, 80.0), names=("--sigma-min", "--sigma-max")):
    """``(lo, hi)`` of a noise grid for ``model``: the values given, else ``max(default lo, model's sigma_min)``
    and ``min(default hi, model's sigma_max)``; given values outside the trained range are refused."""
    check_sigmas(model, {names[0]: sigma_min, names[1]: sigma_max}, extrapolate)
    m_lo, m_hi = model_range(model)
    lo = sigma_min if sigma_min is not None else max(default[0], m_lo)
    hi = sigma_max if sigma_max is not None else min(default[1], m_hi)
    if not lo < hi:
        raise LatentgeoError(f"the noise grid [{lo:g}, {hi:g}] is empty (the model was trained on "
                             f"[{m_lo:.4g}, {m_hi:.4g}]); pass {names[0]} and {names[1]} inside that range, "
                             f"{names[0]} below {names[1]}")
    return lo, hi


def precheck_input(spec: Any, sample_shape, opts: Optional[ModelOptions] = None, what: str = "--encoder") -> None:
    """The cheap part of :func:`latentgeo.resolve.check_input_shape`, from a diffusers VAE's ``config.json`` alone
    (diffusers is not even imported): images of the wrong rank or channel count fail in a second, before the model
    is loaded. Anything else (other encoders, damaged folders) is left to the resolver."""
    from pathlib import Path
    from types import SimpleNamespace

    from latentgeo.runfolder import read_json

    if spec is None or isinstance(spec, dict) or model_kind(spec) != "diffusers":
        return
    from latentgeo import resolve as R

    p = Path(str(spec)).expanduser()
    try:
        comps = R._pipeline_components(p)
    except LatentgeoError:
        return  # the resolver says what is wrong with the folder
    sub = opts.subfolder if opts is not None else None
    if comps is not None:
        sub = sub or next((c for c in R._VAE_SUBFOLDERS if c in comps), None)
        if sub is None:
            return
        p = p / sub
    try:
        cfg = read_json(p / "config.json", want_object=True)
    except LatentgeoError:
        return
    name = cfg.get("_class_name")
    c_in = cfg.get("in_channels", 3)
    if name not in R._VAE_CLASSES or isinstance(c_in, bool) or not isinstance(c_in, int):
        return
    shape = tuple(int(v) for v in sample_shape)
    if len(shape) == 3 and shape[0] == c_in:
        return
    stand_in = SimpleNamespace(kind=name, in_channels=c_in, factor=1, latent_channels=cfg.get("latent_channels", 4))
    try:
        R.DiffusersEncoder.latent_shape(stand_in, shape)  # the resolver's own one-line message
    except LatentgeoError as exc:
        raise LatentgeoError(f"{what}: {exc}") from None


__all__ += ["ModelOptions", "model_spec_options", "resolve_model", "model_kind", "default_out", "check_model_path",
            "check_sigmas", "sigma_grid", "model_range", "precheck_input", "valid_parametrization", "valid_schedule",
            "valid_subfolder", "valid_code", "opt_seed", "read_json_file", "MAX_SEED", "MAX_BATCH"]
