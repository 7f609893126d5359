"""One model resolver for every command: "bring your own model".

:func:`resolve_denoiser` (a VE denoiser ``D(x, sigma) -> E[x0|x]`` with ``sigma_min`` / ``sigma_max``),
:func:`resolve_encoder` (``(encoder x -> z, decoder or None, info)``) and :func:`resolve_flow` (a latentgeo-convention
velocity ``v(x, t)``, noise at ``t = 0``) all take the same kind of ``spec``:

``PATH`` (a string or path), one of

- a latentgeo run folder (``latentgeo train diffusion`` / ``train flow`` / ``train ae``) or a latentgeo
  ``.safetensors`` checkpoint (delegates to :func:`latentgeo.diffusion.load_denoiser`,
  :func:`latentgeo.flows.load_flow`, :func:`latentgeo.autoencoders.load_encoder` / ``load_decoder``). A latentgeo
  flow run is also a denoiser (:class:`~latentgeo.diffusion.wrappers.FlowToVE`, independent coupling only);
- a diffusers pipeline folder (``model_index.json``), a folder with ``unet/`` (+ ``scheduler/``) and/or ``vae/``
  (``vqvae/``) subfolders, or one diffusers model folder (``config.json``): denoisers ``UNet2DModel`` with the
  schedule and ``prediction_type`` read from ``scheduler/scheduler_config.json`` (or ``schedule=``); encoders
  ``AutoencoderKL``, ``AutoencoderDC``, ``VQModel``, ``AutoencoderTiny`` with ``scaling_factor`` / ``shift_factor``
  (``z = (E(x) - shift) * scale``; the decoder inverts it). ``subfolder=`` picks a component explicitly;
- a TorchScript file (``.pt`` / ``.ts``, ``torch.jit.load``; only with ``allow_torchscript=True``, CLI
  ``--allow-torchscript``, because TorchScript is code: a scripted ``__setstate__`` runs while loading and
  ``forward`` is the file's own program) or a ``torch.export`` file (``.pt2``; only with ``allow_pickle=True``,
  because ``torch.export.load`` may unpickle parts of the archive): denoisers and flows need an explicit
  ``parametrization``; encoders are ``x -> z``;

a ``dict`` — the JSON form (``adapter.spec``: ``{"path": ..., "parametrization": ..., "schedule": ..., ...}``), which
a run's config can store and which gives the same adapter back; or (library use) an ``nn.Module`` / callable
with ``parametrization=``.

``code="module:factory"`` (a separate keyword, never part of ``spec``): the user's own Python code, imported and
called (``factory()``; an ``nn.Module`` object is used as it is) ONLY because the user named it. Commands must pass
it only from their own command line (``--code``), never from a file (a run's config, a spec dict, a model folder):
a spec dict naming ``code`` is refused, and a spec string that looks like ``module:factory`` is never imported.

``parametrization``: ``ve`` (already ``D(x, sigma)``; ``sigma_range=[lo, hi]``), ``edm`` (an EDM-preconditioned
``F(c_in x, c_noise)``; needs ``sigma_data``), ``eps`` / ``epsilon``, ``v`` / ``v_prediction``, ``x0`` / ``sample``
(VP models; need ``schedule``), ``velocity`` (rectified flow, SD3/FLUX convention ``x_t = (1 - t) x0 + t n``,
``v = n - x0``; ``time_scale`` e.g. 1000), ``velocity_latentgeo`` (latentgeo's flow convention).

``schedule`` (VP models without a scheduler folder): ``ddpm`` / ``linear`` (diffusers' DDPM default: linear betas
1e-4..0.02, 1000 steps), ``sd`` (Stable Diffusion: scaled_linear 0.00085..0.012, 1000 steps), ``cosine`` /
``squaredcos_cap_v2`` (1000 steps), ``vp_sde`` (continuous, beta 0.1..20, t in [1e-5, 1]), ``log_snr``; a diffusers
scheduler folder or ``scheduler_config.json``; or a dict of diffusers scheduler keys (``beta_schedule``,
``beta_start``, ``beta_end``, ``num_train_timesteps``, ``trained_betas``, ``rescale_betas_zero_snr``), of
``{"type": "vp_sde", "beta_min", "beta_max", "eps"}``, ``{"type": "log_snr" | "sigma", "sigma_min", "sigma_max"}``
or ``{"alphas_cumprod": [...]}``.

Safety: nothing read from a file is imported, evaluated or called. Class names in ``model_index.json`` /
``config.json`` / ``scheduler_config.json`` are checked against fixed allow-lists in this file, and only then mapped
to diffusers classes (schedulers are never instantiated: their schedules are computed here from the config). Weights
load from safetensors only (``from_pretrained(..., use_safetensors=True, local_files_only=True)``); pickled ``.bin``
weights only with ``allow_pickle=True`` (diffusers then uses ``torch.load(weights_only=True)``). Nothing is
downloaded.
"""
from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from latentgeo.checkpoint import read_json
from latentgeo.diffusion.wrappers import (PREDICTIONS, AsLatentgeoFlow, DiscreteTime, EDMToVE, FlowToVE, LogSNRTime,
                                          ReferencedModel, SigmaTime, TimeMap, VEAdapter, VEDenoiser, VPSDETime,
                                          VPToVE, ddpm_alphas_cumprod)
from latentgeo.errors import LatentgeoError

__all__ = ["resolve_denoiser", "resolve_encoder", "resolve_flow", "check_input_shape", "check_recorded_spec",
           "load_denoiser", "load_encoder", "load_flow", "DiffusersEncoder",
           "DiffusersDecoder", "PARAMETRIZATIONS", "SCHEDULE_PRESETS", "ACCEPTED", "time_map_from_schedule"]

#: What a spec may be (for error messages and CLI help).
ACCEPTED = ("a latentgeo run folder or .safetensors checkpoint, a diffusers pipeline folder (model_index.json) or "
            "model folder (config.json), a TorchScript .pt/.ts file (with --allow-torchscript) or torch.export .pt2 "
            "file (with --allow-pickle) and --parametrization, or your own code with --code module:factory")

#: Accepted parametrization names -> canonical name.
PARAMETRIZATIONS = {"ve": "ve", "edm": "edm", "eps": "epsilon", "epsilon": "epsilon", "v": "v",
                    "v_prediction": "v", "x0": "x0", "sample": "x0", "velocity": "velocity",
                    "rectified_flow": "velocity", "velocity_latentgeo": "velocity_latentgeo"}

#: Named schedules (``schedule="sd"``) -> their JSON form.
SCHEDULE_PRESETS: Dict[str, Dict[str, Any]] = {
    "ddpm": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
    "sd": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000},
    "cosine": {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000},
    "vp_sde": {"type": "vp_sde", "beta_min": 0.1, "beta_max": 20.0, "eps": 1e-5},
    "log_snr": {"type": "log_snr"},
}

# Fixed allow-lists. Names read from files are only ever compared with these constants; the diffusers class objects
# are looked up from these constant names (never from a file's text) in _diffusers_classes().
_DENOISER_CLASSES = ("UNet2DModel",)
_VAE_CLASSES = ("AutoencoderKL", "AutoencoderDC", "VQModel", "AutoencoderTiny")
_VP_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                  "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
                  "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DEISMultistepScheduler",
                  "UniPCMultistepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler")
_FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
_DENOISER_SUBFOLDERS = ("unet",)
_VAE_SUBFOLDERS = ("vae", "vqvae")
_UNSUPPORTED_SUBFOLDERS = ("transformer", "prior")

_SPEC_KEYS = {"denoiser": ("path", "subfolder", "parametrization", "schedule", "sigma_data", "time_scale",
                           "sigma_range", "ema", "extrapolate"),
              "encoder": ("path", "subfolder", "sample", "decoder"),
              "flow": ("path", "subfolder", "parametrization", "time_scale", "ema")}
_CODE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_PICKLE_SUFFIXES = (".bin", ".pth", ".ckpt", ".pkl", ".pickle")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64,
           "fp64": torch.float64, "double": torch.float64}


# ---------------------------------------------------------------------------------------------- small helpers


def _dtype(dtype: Any) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise LatentgeoError(f"unknown dtype {dtype!r}; choose one of: float32, float16, bfloat16, float64")


def _device(device: Any) -> torch.device:
    from latentgeo.train import resolve_device

    return resolve_device(device)


def _freeze(m: Any, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """Eval mode, no parameter gradients, on ``device`` (and ``dtype``) — for models the resolver loaded itself."""
    if isinstance(m, nn.Module):
        try:
            m.eval()
        except (NotImplementedError, RuntimeError):  # torch.export modules refuse train()/eval(); they have no mode
            pass
        for p in m.parameters():
            p.requires_grad_(False)
        m.to(device)
        if dtype is not None:
            m.to(dtype)
    return m


def _canonical_parametrization(p: Any) -> Optional[str]:
    if p is None:
        return None
    if not isinstance(p, str) or p not in PARAMETRIZATIONS:
        raise LatentgeoError(f"unknown parametrization {str(p)[:40]!r}; choose one of: ve, edm, eps, v, x0, "
                             "velocity, velocity_latentgeo (diffusers' epsilon, v_prediction, sample also work)")
    return PARAMETRIZATIONS[p]


def _num(v: Any, name: str, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise LatentgeoError(f"{name} must be a {'positive ' if positive else ''}finite number, got {v!r}; "
                             f"pass {'a number > 0' if positive else 'an ordinary number'}, e.g. 1.0")
    return float(v)


def _from_code(code: Any) -> Any:
    """Import ``module`` and return ``factory()`` for ``code = "module:factory"`` — ONLY for code the user named."""
    if not isinstance(code, str) or not _CODE_RE.match(code):
        raise LatentgeoError(f"code must look like 'package.module:factory', got {str(code)[:80]!r}; "
                             "name the module and the function in it that builds the model, e.g. 'mypkg.nets:build'")
    mod_name, attr = code.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise LatentgeoError(f"cannot import '{mod_name}' for code '{code}' ({exc}); put the module on PYTHONPATH "
                             "or run from its folder") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LatentgeoError(f"'{mod_name}' has no attribute '{attr}' (code '{code}'); check the name")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise LatentgeoError(f"code '{code}' names a {type(obj).__name__}; name a factory function (called with no "
                             "arguments) or an nn.Module")
    return obj()


def _refuse_code_like(s: str) -> None:
    if _CODE_RE.match(s) and not Path(s).exists():
        raise LatentgeoError(f"'{s}' looks like Python code (module:factory), which latentgeo never imports from a "
                             f"model spec; pass it explicitly as code='{s}' (CLI: --code {s}), or fix the path")


def _check_spec_dict(spec: Dict[str, Any], role: str) -> Dict[str, Any]:
    if "code" in spec:
        raise LatentgeoError("a model spec read from a file never runs code ('code' key); pass your factory on the "
                             "command line with --code module:factory instead")
    bad = [k for k in spec if k not in _SPEC_KEYS[role]]
    if bad:
        raise LatentgeoError(f"the {role} spec has unknown key(s) {', '.join(map(repr, bad[:3]))}; it takes "
                             f"{', '.join(_SPEC_KEYS[role])}")
    path = spec.get("path")
    if not isinstance(path, str) or not path:
        raise LatentgeoError(f"the {role} spec needs a 'path' string (got {path!r}); it is what a model folder or "
                             "file spec looks like as JSON")
    for k in ("subfolder", "parametrization", "decoder"):
        if spec.get(k) is not None and not isinstance(spec[k], str):
            raise LatentgeoError(f"spec key '{k}' must be a string, got {type(spec[k]).__name__}; "
                                 "give its value in quotes")
    for k in ("ema", "extrapolate", "sample"):
        if spec.get(k) is not None and not isinstance(spec[k], bool):
            raise LatentgeoError(f"spec key '{k}' must be true or false, got {spec[k]!r}; "
                                 "give true or false (JSON booleans, without quotes)")
    return dict(spec)


def check_recorded_spec(spec: Any, role: str, where: str) -> None:
    """Refuse a model spec READ FROM A FILE (e.g. ``latent_of`` in a run's ``config.json``) unless it names a
    latentgeo run folder / ``.safetensors`` checkpoint or a diffusers folder (safetensors weights): a path that a
    file names never brings in a loader that runs code or unpickles (TorchScript, torch.export, ``.bin`` weights,
    ``module:factory``), whatever flags the command line carries. ``role``: ``denoiser`` / ``flow`` / ``encoder``;
    ``where`` names the file and key for the error."""
    path = spec.get("path") if isinstance(spec, dict) else spec
    if isinstance(spec, dict):
        _check_spec_dict(spec, role)
        if spec.get("decoder") is not None:
            raise LatentgeoError(f"{where} names a decoder file '{str(spec['decoder'])[:200]}', which latentgeo never "
                                 "loads from a path read from a file (a decoder file is TorchScript, i.e. code); pass "
                                 "the autoencoder on the command line instead")
    if not isinstance(path, (str, Path)) or not str(path):
        raise LatentgeoError(f"{where} holds no model path (got {type(path).__name__}); pass the model on the command "
                             "line instead")
    shown = str(path)[:200]
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise LatentgeoError(f"{where} names '{shown}', which does not exist; pass the model on the command line")
    ok = False
    if p.is_dir():
        from latentgeo.autoencoders.training import run_folder_kind

        ok = (_pipeline_components(p) is not None or _is_diffusers_model_dir(p)
              or run_folder_kind(p) not in ("empty",))
    elif p.is_file():
        ok = p.suffix.lower() == ".safetensors"
    if not ok:
        raise LatentgeoError(f"{where} names '{shown}', which is not a latentgeo run or .safetensors checkpoint (nor a "
                             "diffusers folder); a path read from a file is loaded only as one of those, never as "
                             "TorchScript, pickle or code -- pass the model on the command line (with its --allow-* "
                             "flag) if you trust it")


def _spec(path: Path, **kw: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {"path": str(Path(path).resolve())}
    d.update({k: v for k, v in kw.items() if v is not None})
    return d


def _sigma_range(sr: Any, default: Tuple[float, float]) -> Tuple[float, float]:
    if sr is None:
        return default
    if not (isinstance(sr, (list, tuple)) and len(sr) == 2):
        raise LatentgeoError(f"sigma_range must be [sigma_min, sigma_max], got {sr!r}; "
                             "pass two numbers, e.g. [0.002, 80]")
    lo, hi = float(sr[0]), float(sr[1])
    if not (math.isfinite(lo) and lo >= 0 and hi > lo):
        raise LatentgeoError(f"sigma_range must satisfy 0 <= sigma_min < sigma_max, got {list(sr)}; "
                             "pass the noise levels the model was trained on, e.g. [0.002, 80]")
    return lo, hi


# ---------------------------------------------------------------------------------------------- schedules


def _scheduler_file(p: Path) -> Path:
    if p.is_dir():
        p = p / "scheduler_config.json"
    if not _regular(p):
        raise LatentgeoError(f"no diffusers scheduler config at '{p}'; pass a scheduler folder or "
                             "scheduler_config.json, or a named schedule (ddpm, sd, cosine, vp_sde, log_snr)")
    return p


def _read_scheduler(path: Path) -> Dict[str, Any]:
    cfg = read_json(_scheduler_file(path), "diffusers scheduler config")
    if not isinstance(cfg, dict):
        raise LatentgeoError(f"'{path}' is not a diffusers scheduler config (not a JSON object); check the folder")
    name = cfg.get("_class_name")
    if name is not None and (not isinstance(name, str) or name not in _VP_SCHEDULERS + _FLOW_SCHEDULERS):
        raise LatentgeoError(f"the scheduler config '{path}' names {str(name)[:60]!r}, which latentgeo does not "
                             f"read (known: {', '.join(_VP_SCHEDULERS + _FLOW_SCHEDULERS)}); pass schedule= "
                             "explicitly")
    return cfg


def _discrete_from_config(cfg: Dict[str, Any], where: str) -> Tuple[DiscreteTime, Dict[str, Any]]:
    """DDPM-family scheduler keys -> (DiscreteTime, normalised JSON keys)."""
    keys = {"beta_schedule": cfg.get("beta_schedule", "linear"), "beta_start": cfg.get("beta_start", 1e-4),
            "beta_end": cfg.get("beta_end", 0.02), "num_train_timesteps": cfg.get("num_train_timesteps", 1000)}
    tb = cfg.get("trained_betas")
    if tb is not None:
        if not (isinstance(tb, list) and len(tb) >= 2 and all(_finite_number(b) and 0 < b < 1 for b in tb)):
            raise LatentgeoError(f"{where}: trained_betas must be a list of at least 2 numbers in (0, 1); fix it or "
                                 "drop it to use beta_schedule")
        keys["trained_betas"] = tb
    else:
        T = keys["num_train_timesteps"]
        if not (isinstance(T, int) and not isinstance(T, bool) and 2 <= T <= 1_000_000):
            raise LatentgeoError(f"{where}: num_train_timesteps must be an integer >= 2, got {str(T)[:40]}; fix the "
                                 "scheduler config")
        for k in ("beta_start", "beta_end"):
            if not (_finite_number(keys[k]) and 0 < keys[k] < 1):
                raise LatentgeoError(f"{where}: {k} must be a number in (0, 1), got {str(keys[k])[:40]}; fix the "
                                     "scheduler config")
        if not isinstance(keys["beta_schedule"], str):
            raise LatentgeoError(f"{where}: beta_schedule must be a name (linear, scaled_linear, "
                                 f"squaredcos_cap_v2), got {str(keys['beta_schedule'])[:40]}; fix the scheduler "
                                 "config")
    if cfg.get("rescale_betas_zero_snr"):
        keys["rescale_betas_zero_snr"] = True
    if cfg.get("timestep_type", "discrete") != "discrete":
        raise LatentgeoError(f"{where}: timestep_type {cfg.get('timestep_type')!r} (continuous EDM-style timesteps) "
                             "is not supported; wrap the model yourself with EDMToVE / VPToVE(time=callable)")
    acp = ddpm_alphas_cumprod(keys["beta_schedule"], keys["beta_start"], keys["beta_end"],
                              keys["num_train_timesteps"] if tb is None else len(tb), tb,
                              bool(keys.get("rescale_betas_zero_snr")))
    if float(acp[-1]) <= 0:  # zero terminal SNR: the last timestep is sigma = inf, outside any finite sigma
        acp = acp[:-1]
    return DiscreteTime(acp, config=keys), keys


def time_map_from_schedule(schedule: Any) -> Tuple[TimeMap, Any]:
    """A VP time map and the JSON form of ``schedule`` (see the module docstring for what it may be)."""
    if isinstance(schedule, TimeMap):
        return schedule, schedule.describe()
    if isinstance(schedule, (str, Path)) and str(schedule) in SCHEDULE_PRESETS:
        return time_map_from_schedule(SCHEDULE_PRESETS[str(schedule)])[0], str(schedule)
    if isinstance(schedule, (str, Path)):
        s = str(schedule)
        if s == "scaled_linear":
            raise LatentgeoError("schedule 'scaled_linear' needs its betas; pass schedule='sd' for Stable "
                                 "Diffusion's (0.00085, 0.012) or a dict with beta_schedule, beta_start, beta_end")
        p = Path(s).expanduser()
        if not p.exists():
            raise LatentgeoError(f"unknown schedule {s[:80]!r}; choose one of: {', '.join(SCHEDULE_PRESETS)}, a "
                                 "diffusers scheduler folder or scheduler_config.json, or a dict of scheduler keys")
        info = _scheduler_info(_read_scheduler(p), str(p))
        if info["family"] != "vp":
            raise LatentgeoError(f"'{p}' is a flow-matching scheduler; use parametrization='velocity' instead")
        return info["time_map"], str(p.resolve())
    if isinstance(schedule, dict):
        d = dict(schedule)
        typ = d.get("type")
        if "alphas_cumprod" in d:
            if set(d) != {"alphas_cumprod"}:
                extra = ", ".join(sorted(map(str, set(d) - {"alphas_cumprod"})))
                raise LatentgeoError(f"a schedule with alphas_cumprod takes no other keys, got {extra}; "
                                     "pass alphas_cumprod alone")
            tm = DiscreteTime(d["alphas_cumprod"])
            return tm, d
        if typ == "vp_sde":
            extra = set(d) - {"type", "beta_min", "beta_max", "eps"}
            if extra:
                raise LatentgeoError(f"vp_sde schedule has unknown key(s) {sorted(extra)}; it takes beta_min, "
                                     "beta_max, eps")
            return VPSDETime(d.get("beta_min", 0.1), d.get("beta_max", 20.0), d.get("eps", 1e-5)), d
        if typ in ("log_snr", "sigma"):
            extra = set(d) - {"type", "sigma_min", "sigma_max"}
            if extra:
                raise LatentgeoError(f"{typ} schedule has unknown key(s) {sorted(extra)}; it takes sigma_min, "
                                     "sigma_max")
            lo, hi = _sigma_range([d.get("sigma_min", 0.0), d.get("sigma_max", math.inf)], (0.0, math.inf))
            return (LogSNRTime(lo, hi) if typ == "log_snr" else SigmaTime(lo, hi)), d
        if typ is not None:
            raise LatentgeoError(f"unknown schedule type {str(typ)[:40]!r}; choose vp_sde, log_snr or sigma, or give "
                                 "diffusers scheduler keys")
        allowed = {"beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "trained_betas",
                   "rescale_betas_zero_snr", "_class_name"}
        extra = set(d) - allowed
        if extra:
            raise LatentgeoError(f"schedule has unknown key(s) {sorted(extra)[:3]}; it takes "
                                 f"{', '.join(sorted(allowed - {'_class_name'}))}")
        tm, keys = _discrete_from_config(d, "schedule")
        return tm, keys
    raise LatentgeoError(f"schedule must be a name ({', '.join(SCHEDULE_PRESETS)}), a scheduler folder or a dict, "
                         f"got {type(schedule).__name__}; pass e.g. schedule='sd'")


def _scheduler_info(cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
    """What a diffusers scheduler config says about the model: family, time map, prediction, learned variance."""
    name = cfg.get("_class_name")
    if name in _FLOW_SCHEDULERS:
        T = cfg.get("num_train_timesteps", 1000)
        return {"family": "flow", "time_scale": _num(T, "num_train_timesteps"), "prediction": "velocity",
                "class": name}
    pred = cfg.get("prediction_type", "epsilon")
    if not isinstance(pred, str) or pred not in PREDICTIONS:
        raise LatentgeoError(f"{where}: prediction_type {str(pred)[:40]!r} is not one of epsilon, v_prediction, "
                             "sample; pass parametrization= with a matching schedule")
    tm, keys = _discrete_from_config(cfg, where)
    lv = cfg.get("variance_type") in ("learned", "learned_range")
    return {"family": "vp", "time_map": tm, "schedule": keys, "prediction": PREDICTIONS[pred],
            "learned_variance": lv, "class": name}


# ---------------------------------------------------------------------------------------------- diffusers loading


def _diffusers_classes() -> Dict[str, type]:
    try:
        import diffusers
    except ImportError:
        raise LatentgeoError("loading a diffusers model needs diffusers; install it with "
                             "`pip install latentgeo[interop]`") from None
    # The names are this file's constants (never text from a file), so this lookup is an allow-list table.
    return {n: getattr(diffusers, n) for n in _DENOISER_CLASSES + _VAE_CLASSES if hasattr(diffusers, n)}


def _regular(f: Path) -> bool:
    """Whether ``f`` is a regular file; one line when something else sits there (a FIFO or a link to a device would
    block or never end when read, so it is never opened)."""
    if not f.exists():
        return False
    if not f.is_file():
        kind = "a folder" if f.is_dir() else "not a regular file (a FIFO, socket, device or a link to one)"
        raise LatentgeoError(f"'{f}' is {kind}; replace it with the model's {f.name} (re-save the model with "
                             "save_pretrained)")
    return True


def _is_diffusers_model_dir(d: Path) -> bool:
    if not _regular(d / "config.json"):
        return False
    try:
        cfg = read_json(d / "config.json", "diffusers model config")
    except (LatentgeoError, RecursionError):
        # a damaged config.json beside diffusers weights is still a diffusers folder: loading it then names the file
        return any(d.glob("diffusion_pytorch_model*"))
    return isinstance(cfg, dict) and "_class_name" in cfg


def _pipeline_components(d: Path) -> Optional[Dict[str, Optional[str]]]:
    """``{component: class name or None}`` of a diffusers pipeline-like folder, or None when ``d`` is not one.
    Entries of ``model_index.json`` are validated for the components latentgeo uses; the others are never read."""
    idx = d / "model_index.json"
    if _regular(idx):
        comps = read_json(idx, "diffusers model_index.json")
        if not isinstance(comps, dict):
            raise LatentgeoError(f"'{idx}' is not a JSON object; the pipeline folder is damaged")
        out: Dict[str, Optional[str]] = {}
        allowed = {**{c: _DENOISER_CLASSES for c in _DENOISER_SUBFOLDERS}, **{c: _VAE_CLASSES for c in _VAE_SUBFOLDERS},
                   "scheduler": _VP_SCHEDULERS + _FLOW_SCHEDULERS}
        for comp, ok in allowed.items():
            if comp not in comps or comps[comp] is None:
                continue
            e = comps[comp]
            if isinstance(e, list) and len(e) == 2 and e[0] is None and e[1] is None:
                continue
            if not (isinstance(e, list) and len(e) == 2 and e[0] == "diffusers" and isinstance(e[1], str)
                    and e[1] in ok):
                shown = json.dumps(e)[:80]
                raise LatentgeoError(f"'{idx}' names {shown} for its {comp}, which latentgeo does not load (allowed: "
                                     f"{', '.join(ok)} from diffusers); latentgeo never imports classes named in "
                                     "files — re-save the pipeline with diffusers or pass a model folder")
            out[comp] = e[1]
        for comp in _UNSUPPORTED_SUBFOLDERS:
            if comp in comps and comps[comp] not in (None, [None, None]):
                out.setdefault(comp, None)
        return out
    # Without model_index.json only subfolders holding diffusers configs count (a latentgeo autoencoder run has
    # encoder/ and decoder/ stage folders with latentgeo run records).
    subs = {c: None for c in _DENOISER_SUBFOLDERS + _VAE_SUBFOLDERS + ("scheduler",) + _UNSUPPORTED_SUBFOLDERS
            if _is_diffusers_model_dir(d / c) or _regular(d / c / "scheduler_config.json")}
    return subs or None


def _weights(d: Path, allow_pickle: bool) -> Tuple[bool, Optional[str]]:
    """(use_safetensors, variant) for a diffusers model folder; refuses pickle-only folders unless allowed."""
    names = sorted(p.name for p in d.iterdir() if p.is_file())
    base = "diffusion_pytorch_model"
    for ext, st in ((".safetensors", True), (".bin", False)):
        if not st and not allow_pickle:
            break
        if f"{base}{ext}" in names or f"{base}{ext}.index.json" in names:
            return st, None
        for n in names:
            m = re.fullmatch(rf"{base}\.(\w+){re.escape(ext)}(\.index\.json)?", n)
            if m:
                return st, m.group(1)
    pickled = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
    if pickled:
        raise LatentgeoError(f"'{d}' holds only pickled weights ({pickled[0]}); latentgeo loads safetensors only: "
                             "re-save the model with model.save_pretrained(DIR) (safetensors is the default), or "
                             "pass allow_pickle=True (CLI --allow-pickle) for files you trust (loaded with "
                             "torch.load(weights_only=True))")
    raise LatentgeoError(f"'{d}' has no weights file ({base}.safetensors); save the model with "
                         "model.save_pretrained(DIR)")


def _weight_files(d: Path, use_st: bool, variant: Optional[str]) -> list:
    base = "diffusion_pytorch_model" + (f".{variant}" if variant else "") + (".safetensors" if use_st else ".bin")
    if (d / base).is_file():
        return [d / base]
    idx = read_json(d / f"{base}.index.json", "diffusers weight index")
    wm = idx.get("weight_map") if isinstance(idx, dict) else None
    if not isinstance(wm, dict):
        raise LatentgeoError(f"'{d / (base + '.index.json')}' has no weight_map; re-save the model with save_pretrained")
    names = sorted({v for v in wm.values() if isinstance(v, str)})
    if any(Path(n).name != n for n in names):
        raise LatentgeoError(f"'{d}' has a weight index that points outside its folder; re-save the model")
    return [d / n for n in names]


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_config_values(cfg: Dict[str, Any], cfg_file: Path, name: str) -> None:
    """Refuse settings diffusers would accept silently or fail on much later: a file-chosen quantisation backend,
    non-finite numbers (``NaN`` / ``Infinity`` are valid in Python's JSON), and the keys latentgeo itself reads
    (``sample_size``, ``norm_eps``, ``scaling_factor``, ``shift_factor``, ``latents_mean`` / ``latents_std``) of the
    wrong type or sign. Each error names the key."""
    where = f"'{cfg_file}'"
    if cfg.get("quantization_config") is not None:
        raise LatentgeoError(f"{where} asks for quantization_config, i.e. the file would choose which quantisation "
                             "backend runs; latentgeo loads unquantised weights only -- remove the key (or load and "
                             "quantise the model yourself and pass it with --code)")

    def bad_number(v: Any, depth: int = 0) -> bool:
        if isinstance(v, float):
            return not math.isfinite(v)
        if isinstance(v, (list, tuple)) and depth < 4:
            return any(bad_number(u, depth + 1) for u in v)
        return False

    for k, v in cfg.items():
        if bad_number(v):
            raise LatentgeoError(f"{where}: {k} holds a non-finite number ({str(v)[:40]}); fix the key or re-save the "
                                 "model with save_pretrained")
    size = cfg.get("sample_size")
    if size is not None:
        vals = size if isinstance(size, (list, tuple)) else [size]
        if not (1 <= len(vals) <= 3 and all(isinstance(u, int) and not isinstance(u, bool) and 0 < u <= 65536
                                             for u in vals)):
            raise LatentgeoError(f"{where}: sample_size must be a positive integer or a list of them, got "
                                 f"{str(size)[:40]}; fix the key or re-save the model")
    if "norm_eps" in cfg and not (_finite_number(cfg["norm_eps"]) and cfg["norm_eps"] > 0):
        raise LatentgeoError(f"{where}: norm_eps must be a positive number, got {str(cfg['norm_eps'])[:40]}; fix the "
                             "key (diffusers' default is 1e-5)")
    if name in _VAE_CLASSES:
        sf = cfg.get("scaling_factor")
        if sf is not None and not (_finite_number(sf) and sf > 0):
            raise LatentgeoError(f"{where}: scaling_factor must be a positive number, got {json.dumps(sf)[:40]}; fix "
                                 "the key (Stable Diffusion's VAE uses 0.18215) or drop it for 1.0")
        sh = cfg.get("shift_factor")
        if sh is not None and not _finite_number(sh):
            raise LatentgeoError(f"{where}: shift_factor must be a finite number or null, got {json.dumps(sh)[:40]}; "
                                 "fix the key")
        c = cfg.get("latent_channels", 4)
        for k in ("latents_mean", "latents_std"):
            v = cfg.get(k)
            if v is None:
                continue
            if not (isinstance(v, list) and len(v) == c and all(_finite_number(u) for u in v)
                    and (k == "latents_mean" or all(u > 0 for u in v))):
                raise LatentgeoError(f"{where}: {k} must be a list of {c} finite numbers"
                                     f"{' > 0' if k == 'latents_std' else ''}; fix the key or drop it")


def _check_sizes(cls: type, cfg: Dict[str, Any], d: Path, use_st: bool, variant: Optional[str]) -> None:
    """Build the model from its config on the meta device (no memory) and compare with the stored weights BEFORE
    diffusers allocates it, so that a config edited to absurd sizes is refused instead of exhausting memory."""

    def plausible(v: Any, depth: int = 0) -> bool:
        if isinstance(v, str):  # diffusers echoes unknown keys in a warning: a 200 MB string would flood stderr
            return len(v) <= 4096
        if isinstance(v, bool) or v is None or isinstance(v, float):
            return True
        if isinstance(v, int):
            return abs(v) <= 1_000_000
        if isinstance(v, (list, tuple)):
            return len(v) <= 64 and depth < 4 and all(plausible(u, depth + 1) for u in v)
        if isinstance(v, dict):
            return len(v) <= 256 and depth < 4 and all(plausible(u, depth + 1) for u in v.values())
        return False

    lpb = cfg.get("layers_per_block", 1)
    lpb = max(lpb) if isinstance(lpb, list) and lpb and all(isinstance(u, int) for u in lpb) else lpb
    bad = [k for k, v in cfg.items() if not plausible(v)]
    if bad or not isinstance(lpb, int) or lpb > 100:
        raise LatentgeoError(f"'{d / 'config.json'}' holds implausible settings ({(bad or ['layers_per_block'])[0]}); "
                             "the config was edited — re-save the model with save_pretrained")
    try:
        with torch.device("meta"):
            probe = cls.from_config(cfg)
        shapes = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    except Exception as exc:  # the config itself is unusable
        msg = (str(exc).strip().splitlines() or [""])[0][:160]
        raise LatentgeoError(f"'{d / 'config.json'}' holds settings {cls.__name__} cannot be built from "
                             f"({type(exc).__name__}: {msg}); re-save the model with save_pretrained") from None
    files = _weight_files(d, use_st, variant)
    if use_st:
        from safetensors import safe_open

        stored: Dict[str, Tuple[int, ...]] = {}
        try:
            for f in files:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        stored[k] = tuple(h.get_slice(k).get_shape())
        except Exception as exc:
            raise LatentgeoError(f"the weights in '{d}' are corrupt or truncated ({type(exc).__name__}); re-save the "
                                 "model with save_pretrained") from None
        bad = [k for k in shapes if k in stored and shapes[k] != stored[k]]
        if bad:
            raise LatentgeoError(f"'{d}': the config and the weights disagree (e.g. {bad[0]}: {shapes[bad[0]]} vs "
                                 f"{stored[bad[0]]}); the config was edited or belongs to another model")
    n = sum(math.prod(v) for v in shapes.values())
    size = sum(f.stat().st_size for f in files if f.is_file())
    if 2 * n > 1.5 * size + (1 << 20):  # even fp16 weights would need more bytes than the files hold
        raise LatentgeoError(f"'{d / 'config.json'}' describes a model of {n:,} parameters but the weight files hold "
                             f"{size:,} bytes; the config was edited or belongs to another model")


def _load_diffusers_model(d: Path, allowed: Sequence[str], device: torch.device, dtype: Optional[torch.dtype],
                          allow_pickle: bool, expected: Optional[str] = None):
    cfg_file = d / "config.json"
    cfg = read_json(cfg_file, "diffusers model config")
    name = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if isinstance(name, str) and name not in allowed and name in _VAE_CLASSES + _DENOISER_CLASSES:
        role, other = ("a VAE", "the encoder") if name in _VAE_CLASSES else ("a denoiser UNet", "the model")
        raise LatentgeoError(f"'{d}' holds {role} ({name}), not {'a denoiser' if role == 'a VAE' else 'an encoder'}; "
                             f"pass it as {other}")
    if not isinstance(name, str) or name not in allowed:
        raise LatentgeoError(f"'{cfg_file}' names the class {str(name)[:60]!r}, which latentgeo does not load here "
                             f"(allowed: {', '.join(allowed)}); latentgeo never imports classes named in files")
    if expected is not None and expected != name:
        raise LatentgeoError(f"'{cfg_file}' holds a {name} but model_index.json says {expected}; the folder is "
                             "inconsistent, re-save it with diffusers")
    table = _diffusers_classes()
    if name not in table:
        raise LatentgeoError(f"the installed diffusers has no {name}; upgrade diffusers to load '{d}'")
    _check_config_values(cfg, cfg_file, name)
    use_st, variant = _weights(d, allow_pickle)
    _check_sizes(table[name], cfg, d, use_st, variant)
    kw: Dict[str, Any] = {"use_safetensors": use_st, "local_files_only": True}
    try:
        from diffusers.utils import is_accelerate_available

        kw["low_cpu_mem_usage"] = bool(is_accelerate_available())
    except ImportError:  # pragma: no cover - older diffusers
        pass
    if variant is not None:
        kw["variant"] = variant
    if dtype is not None:
        kw["torch_dtype"] = dtype
    try:
        model = table[name].from_pretrained(str(d), **kw)
    except LatentgeoError:
        raise
    except Exception as exc:  # diffusers raises many types for damaged folders
        msg = (str(exc).strip().splitlines() or [""])[0][:200]
        raise LatentgeoError(f"cannot load the diffusers {name} in '{d}' ({type(exc).__name__}: {msg}); re-save it "
                             "with save_pretrained") from None
    return _freeze(model, device, None), name


# ---------------------------------------------------------------------------------------------- files


def _load_file_model(p: Path, device: torch.device, allow_pickle: bool, role: str,
                     allow_torchscript: bool = False) -> Tuple[Any, str]:
    suf = p.suffix.lower()
    if suf in (".pt", ".ts"):
        # TorchScript is code: a scripted __setstate__ runs inside torch.jit.load and forward is the file's own
        # program, so it is loaded only when the user says so (CLI --allow-torchscript), like --code.
        if not allow_torchscript:
            raise LatentgeoError(f"'{p}' is a TorchScript file, and TorchScript is code (its __setstate__ runs while "
                                 "loading, its forward is the file's own program); pass allow_torchscript=True "
                                 "(CLI --allow-torchscript) only for files you trust")
        try:
            m = torch.jit.load(str(p), map_location=device)
        except Exception as exc:
            raise LatentgeoError(f"'{p}' is not a TorchScript archive ({type(exc).__name__}); latentgeo loads .pt/.ts "
                                 "files only as TorchScript (torch.jit.script(model).save(path)) and never unpickles "
                                 "them") from None
        return m, "torchscript"
    if suf == ".pt2":
        if not allow_pickle:
            raise LatentgeoError(f"'{p}' is a torch.export archive, and torch.export.load may unpickle parts of it; "
                                 "pass allow_pickle=True (CLI --allow-pickle) only for files you trust, or save the "
                                 "model as TorchScript (.pt) instead")
        try:
            ep = torch.export.load(str(p))
        except Exception as exc:
            raise LatentgeoError(f"'{p}' is not a torch.export archive ({type(exc).__name__}); save it with "
                                 "torch.export.save") from None
        return ep.module().to(device), "export"
    if suf in _PICKLE_SUFFIXES:
        raise LatentgeoError(f"'{p}' is a pickle file, which latentgeo never loads; convert the weights to "
                             f"safetensors (a diffusers folder via save_pretrained) or save a TorchScript .pt; "
                             f"accepted {role} specs: {ACCEPTED}")
    raise LatentgeoError(f"cannot tell what '{p}' is (suffix '{suf}'); accepted {role} specs: {ACCEPTED}")


def _run_config(p: Path) -> Dict[str, Any]:
    d = p if p.is_dir() else p.parent
    f = d / "config.json"
    if not f.is_file():
        return {}
    cfg = read_json(f, "run record")
    user = cfg.get("user") if isinstance(cfg, dict) else None
    return user if isinstance(user, dict) else {}


# ---------------------------------------------------------------------------------------------- denoisers


def _wrap_denoiser(model: Any, p: Optional[str], *, sigma_data, schedule, time_scale, sigma_range, extrapolate,
                   what: str) -> VEAdapter:
    if p is None:
        raise LatentgeoError(f"{what} needs parametrization= to be used as a denoiser; pass one of ve (already "
                             "D(x, sigma)), edm (with sigma_data), eps / v / x0 (with schedule), velocity or "
                             "velocity_latentgeo")
    if p == "ve":
        lo, hi = _sigma_range(sigma_range, (0.0, math.inf))
        return VEDenoiser(model, lo, hi, extrapolate=extrapolate)
    if p == "edm":
        if sigma_data is None:
            raise LatentgeoError("parametrization 'edm' needs sigma_data (the data std the network was trained "
                                 "with); pass sigma_data= (CLI --sigma-data)")
        lo, hi = _sigma_range(sigma_range, (0.002, 80.0))
        return EDMToVE(model, _num(sigma_data, "sigma_data"), sigma_min=lo, sigma_max=hi, extrapolate=extrapolate)
    if sigma_range is not None:
        raise LatentgeoError(f"sigma_range is for parametrization ve / edm; the range of '{p}' comes from its "
                             "schedule (use extrapolate=True to go beyond it)")
    ts = 1.0 if time_scale is None else _num(time_scale, "time_scale")
    if p in ("epsilon", "v", "x0"):
        if schedule is None:
            raise LatentgeoError(f"parametrization '{p}' needs schedule= (CLI --schedule); pass one of "
                                 f"{', '.join(SCHEDULE_PRESETS)}, a diffusers scheduler folder, or a dict of its keys")
        tm, _ = time_map_from_schedule(schedule)
        return VPToVE(model, time=tm, prediction=p, time_scale=ts, extrapolate=extrapolate)
    conv = "rectified_flow" if p == "velocity" else "latentgeo"
    return FlowToVE(model, conv, ts, extrapolate=extrapolate)


def _diffusers_denoiser(d: Path, comps: Optional[Dict[str, Optional[str]]], subfolder: Optional[str], *,
                        p: Optional[str], schedule, time_scale, extrapolate, device, dtype, allow_pickle) -> VEAdapter:
    if comps is not None:  # pipeline-like folder
        if subfolder is None:
            found = [c for c in _DENOISER_SUBFOLDERS if c in comps]
            if not found:
                other = [c for c in _UNSUPPORTED_SUBFOLDERS if c in comps]
                if other:
                    raise LatentgeoError(f"'{d}' holds a {other[0]} (text-/class-conditioned diffusers model), which "
                                         "latentgeo cannot call unconditionally; export it with a fixed condition as "
                                         "TorchScript, or use --code module:factory")
                raise LatentgeoError(f"'{d}' has no unet/ folder, so it holds no denoiser (it has: "
                                     f"{', '.join(comps) or 'nothing'}); pass it as the encoder, or a folder with "
                                     "unet/")
            subfolder = found[0]
        unet_dir, expected = d / subfolder, comps.get(subfolder)
        sched_dir = d / "scheduler" if (d / "scheduler").is_dir() else None
    else:
        unet_dir, expected = d, None
        sib = d.parent / "scheduler"
        sched_dir = sib if _regular(sib / "scheduler_config.json") else None
    if not _regular(unet_dir / "config.json"):
        raise LatentgeoError(f"'{unet_dir}' has no config.json; pass a diffusers model folder")
    unet, name = _load_diffusers_model(unet_dir, _DENOISER_CLASSES, device, dtype, allow_pickle, expected)
    cfg = dict(unet.config)
    if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        raise LatentgeoError(f"the UNet in '{unet_dir}' is class-conditional (needs class_labels), which latentgeo "
                             "cannot call unconditionally; wrap it with a fixed label in --code module:factory")
    if schedule is not None:  # an explicit schedule replaces the scheduler's; its prediction type still counts
        tm, _ = time_map_from_schedule(schedule)
        info = {"family": "vp", "time_map": tm, "prediction": None, "learned_variance": False, "class": None}
        if sched_dir is not None:
            found = _scheduler_info(_read_scheduler(sched_dir), str(sched_dir))
            if found["family"] == "vp":
                info.update(prediction=found["prediction"], learned_variance=found["learned_variance"])
    elif sched_dir is not None:
        info = _scheduler_info(_read_scheduler(sched_dir), str(sched_dir))
    else:
        raise LatentgeoError(f"'{unet_dir}' has no scheduler beside it (no ../scheduler/scheduler_config.json), so its "
                             "noise schedule is unknown; pass the pipeline folder, or schedule= (CLI --schedule: "
                             f"{', '.join(SCHEDULE_PRESETS)}, or a scheduler folder)")
    pred = info["prediction"]
    if pred is not None and p is not None and p != pred:
        raise LatentgeoError(f"the scheduler of '{d}' says prediction '{pred}' but parametrization '{p}' was passed; "
                             "drop --parametrization or fix the scheduler config")
    pred = p or pred
    if pred is None:
        raise LatentgeoError(f"the UNet in '{unet_dir}' needs parametrization= (eps, v or x0) with schedule=; no "
                             "scheduler config says which it predicts")
    lv = bool(info.get("learned_variance"))
    cin, cout = int(cfg.get("in_channels", 3)), int(cfg.get("out_channels", 3))
    if cout != cin * (2 if lv else 1):
        raise LatentgeoError(f"the UNet in '{unet_dir}' maps {cin} to {cout} channels, which fits neither a plain "
                             "nor a learned-variance prediction; check variance_type in the scheduler config")
    if info["family"] == "flow" or pred in ("velocity", "velocity_latentgeo"):
        ts = info.get("time_scale", 1.0) if time_scale is None else _num(time_scale, "time_scale")
        den: VEAdapter = FlowToVE(unet, "rectified_flow" if pred != "velocity_latentgeo" else "latentgeo", ts,
                                  extrapolate=extrapolate)
    elif pred in ("epsilon", "v", "x0"):
        ts = 1.0 if time_scale is None else _num(time_scale, "time_scale")
        den = VPToVE(unet, time=info["time_map"], prediction=pred, time_scale=ts, extrapolate=extrapolate,
                     learned_variance=lv)
    else:
        raise LatentgeoError(f"parametrization '{pred}' does not fit a diffusers UNet; choose eps, v or x0")
    size = cfg.get("sample_size")
    if isinstance(size, int):
        size = [size, size]
    if isinstance(size, (list, tuple)) and len(size) == 2:
        den.info["sample_shape"] = [cin, int(size[0]), int(size[1])]
    den.info.update({"source": "diffusers", "class": name, "prediction": pred,
                     "scheduler": info.get("class")})
    return den


def _attach(m: Any, spec: Optional[Dict[str, Any]], info: Dict[str, Any]) -> Any:
    m.spec = spec
    m.info = {**getattr(m, "info", {}), **info}
    return m


def resolve_denoiser(spec: Any = None, *, parametrization: Optional[str] = None, sigma_data: Optional[float] = None,
                     schedule: Any = None, time_scale: Optional[float] = None,
                     sigma_range: Optional[Sequence[float]] = None, subfolder: Optional[str] = None,
                     code: Optional[str] = None, ema: bool = True, device: Any = "cpu", dtype: Any = None,
                     allow_pickle: bool = False, extrapolate: bool = False,
                     allow_torchscript: bool = False) -> nn.Module:
    """The model named by ``spec`` as a VE denoiser ``D(x, sigma)`` in eval mode on ``device``.

    The result has ``sigma_min`` / ``sigma_max`` (its trained noise range: pick sigma grids inside it), ``spec``
    (the JSON dict that gives it back, or None for in-memory / code models) and ``info`` (``source``,
    ``sample_shape`` [C, H, W] or [D] when known, ...). latentgeo's own denoisers (``EDMDenoiser``) are returned as
    they are, with range ``[0, inf]`` (EDM training draws ``ln sigma`` from a normal law: no hard range). See the
    module docstring for the spec grammar; ``dtype`` casts the model's weights (inputs are cast per call), and a dict
    ``spec``'s values are overridden by the keywords given explicitly here.
    """
    dev, dt = _device(device), _dtype(dtype)
    if code is not None:
        if spec is not None:
            raise LatentgeoError("got both a model spec and code='module:factory'; pass one of them, not both")
        obj = _freeze(_from_code(code), dev, dt)
        return _in_memory_denoiser(obj, parametrization, sigma_data, schedule, time_scale, sigma_range, extrapolate,
                                   f"the model from code '{code}'", {"source": "code", "code": code})
    if spec is None:
        raise LatentgeoError(f"no model given; pass {ACCEPTED}")
    if isinstance(spec, dict):
        d = _check_spec_dict(spec, "denoiser")
        given = {"parametrization": parametrization, "sigma_data": sigma_data, "schedule": schedule,
                 "time_scale": time_scale, "sigma_range": sigma_range, "subfolder": subfolder}
        kw = {**{k: d.get(k) for k in given}, **{k: v for k, v in given.items() if v is not None}}
        return resolve_denoiser(d["path"], **kw, ema=d.get("ema", True) if ema else False, device=dev, dtype=dt,
                                allow_pickle=allow_pickle, extrapolate=bool(extrapolate or d.get("extrapolate")),
                                allow_torchscript=allow_torchscript)
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, (str, Path))):
        return _in_memory_denoiser(spec, parametrization, sigma_data, schedule, time_scale, sigma_range, extrapolate,
                                   f"the {type(spec).__name__}", {"source": "module"})
    if not isinstance(spec, (str, Path)):
        raise LatentgeoError(f"a model spec must be a path, a dict or a module, got {type(spec).__name__}; pass "
                             f"{ACCEPTED}")
    p = _canonical_parametrization(parametrization)
    s = str(spec)
    _refuse_code_like(s)
    path = Path(s).expanduser()
    if not path.exists():
        raise LatentgeoError(f"model '{s}' does not exist; pass {ACCEPTED}")
    opts = dict(sigma_data=sigma_data, schedule=schedule, time_scale=time_scale, sigma_range=sigma_range,
                extrapolate=extrapolate)
    describable = True
    if isinstance(schedule, TimeMap):
        sched_json = schedule.describe()
        describable = sched_json is not None
    elif schedule is None or isinstance(schedule, dict) or str(schedule) in SCHEDULE_PRESETS:
        sched_json = schedule
    else:
        sched_json = str(Path(str(schedule)).expanduser().resolve())
    spec_kw = dict(parametrization=parametrization, schedule=sched_json, sigma_data=sigma_data,
                   time_scale=time_scale, sigma_range=list(sigma_range) if sigma_range is not None else None,
                   subfolder=subfolder, ema=None if ema else False, extrapolate=True if extrapolate else None)
    if path.is_dir():
        comps = _pipeline_components(path)
        if comps is not None or _is_diffusers_model_dir(path):
            if sigma_data is not None or sigma_range is not None:
                raise LatentgeoError("sigma_data / sigma_range do not apply to a diffusers UNet; drop them")
            den = _diffusers_denoiser(path, comps, subfolder, p=p, schedule=schedule, time_scale=time_scale,
                                      extrapolate=extrapolate, device=dev, dtype=dt, allow_pickle=allow_pickle)
            return _attach(_freeze(den, dev, dt), _spec(path, **spec_kw) if describable else None, {})
        if subfolder is not None:
            raise LatentgeoError(f"subfolder= is for diffusers pipeline folders; '{path}' is not one")
        return _latentgeo_denoiser(path, p, opts, ema, dev, dt, spec_kw if describable else None)
    suf = path.suffix.lower()
    if suf == ".safetensors":
        return _latentgeo_denoiser(path, p, opts, ema, dev, dt, spec_kw if describable else None)
    if suf == ".json":
        raise LatentgeoError(f"'{path}' is a JSON file; pass the model folder that holds it")
    model, kind = _load_file_model(path, dev, allow_pickle, "denoiser", allow_torchscript)
    den = _wrap_denoiser(model, p, what=f"the {kind} file '{path}'", **opts)
    return _attach(_freeze(den, dev, dt), _spec(path, **spec_kw) if describable else None, {"source": kind})


def _in_memory_denoiser(obj, parametrization, sigma_data, schedule, time_scale, sigma_range, extrapolate,
                        what, info) -> nn.Module:
    """Wrap a model object. Its device, dtype and mode are left as they are (it is the caller's object)."""
    from latentgeo.diffusion.edm import EDMDenoiser
    from latentgeo.flows import FlowModel

    p = _canonical_parametrization(parametrization)
    if isinstance(obj, VEAdapter) and p is None:
        if extrapolate:
            obj.extrapolate = True
        return obj
    if isinstance(obj, EDMDenoiser) and p in (None, "ve"):
        obj.sigma_min, obj.sigma_max = 0.0, math.inf
        return _attach(obj, None, {"source": "latentgeo", **info})
    if isinstance(obj, FlowModel) and p in (None, "velocity_latentgeo"):
        p = "velocity_latentgeo"
    den = _wrap_denoiser(obj, p, sigma_data=sigma_data, schedule=schedule, time_scale=time_scale,
                         sigma_range=sigma_range, extrapolate=extrapolate, what=what)
    return _attach(den, None, info)


def _latentgeo_denoiser(path: Path, p, opts, ema, dev, dt, spec_kw) -> nn.Module:
    from latentgeo.autoencoders.training import run_folder_kind
    from latentgeo.diffusion.edm import EDMDenoiser
    from latentgeo.flows import FlowModel
    from latentgeo.train import load_trained

    if path.is_dir():
        kind = run_folder_kind(path)
        if kind == "autoencoder":
            raise LatentgeoError(f"'{path}' is an autoencoder run (`latentgeo train ae`), not a denoiser; pass it as "
                                 "the encoder and a `latentgeo train diffusion` folder as the model")
        if kind == "empty":
            raise LatentgeoError(f"'{path}' holds no model; pass {ACCEPTED}")
    model = load_trained(path, ema=ema, device=str(dev), command="latentgeo train diffusion")
    user = _run_config(path)
    info: Dict[str, Any] = {"source": "latentgeo"}
    if isinstance(user.get("data_shape"), list):
        info["sample_shape"] = user["data_shape"]
    spec = None if spec_kw is None else \
        _spec(path, **{k: spec_kw[k] for k in ("parametrization", "ema", "extrapolate") if k in spec_kw})
    if isinstance(model, EDMDenoiser):
        if p not in (None, "ve"):
            raise LatentgeoError(f"'{path}' holds a latentgeo EDM denoiser (already D(x, sigma)); drop "
                                 f"parametrization '{p}'")
        model.sigma_min, model.sigma_max = 0.0, math.inf
        if dt is not None:
            model.to(dt)
        return _attach(model, spec, {**info, "kind": "denoiser"})
    if isinstance(model, FlowModel):
        if p not in (None, "velocity_latentgeo"):
            raise LatentgeoError(f"'{path}' holds a latentgeo flow (latentgeo convention); drop parametrization "
                                 f"'{p}'")
        if user.get("coupling", "independent") != "independent":
            raise LatentgeoError(f"'{path}' is a flow trained with {user.get('coupling')!r} coupling, whose velocity "
                                 "is not a posterior mean, so it gives no denoiser; train it with --coupling "
                                 "independent, or use it for sampling only (resolve_flow)")
        den = FlowToVE(model, "latentgeo", extrapolate=opts["extrapolate"])
        return _attach(_freeze(den, dev, dt), spec, {**info, "kind": "flow"})
    den = _wrap_denoiser(model, p, what=f"the latentgeo {type(model).__name__} in '{path}'", **opts)
    spec = None if spec_kw is None else _spec(path, **spec_kw)
    return _attach(_freeze(den, dev, dt), spec, {**info, "kind": type(model).__name__})


# ---------------------------------------------------------------------------------------------- flows


def resolve_flow(spec: Any = None, *, parametrization: Optional[str] = None, time_scale: Optional[float] = None,
                 subfolder: Optional[str] = None, code: Optional[str] = None, ema: bool = True, device: Any = "cpu",
                 dtype: Any = None, allow_pickle: bool = False, allow_torchscript: bool = False) -> nn.Module:
    """The model named by ``spec`` as a latentgeo flow ``v(x, t)`` (``x_t = (1 - t) z0 + t z1``, noise at ``t = 0``)
    for :func:`latentgeo.flows.flow_sample`: a latentgeo flow run / checkpoint, or a TorchScript / export file /
    code / module with ``parametrization`` ``velocity_latentgeo`` (used as it is) or ``velocity`` (SD3/FLUX
    convention, converted by :class:`~latentgeo.diffusion.wrappers.AsLatentgeoFlow`)."""
    from latentgeo.flows import FlowModel

    dev, dt = _device(device), _dtype(dtype)
    p = _canonical_parametrization(parametrization)

    def wrap(model, what, spec_d, info, own=True):
        if isinstance(model, FlowModel) and p in (None, "velocity_latentgeo"):
            return _attach(_freeze(model, dev, dt) if own else model, spec_d, info)
        if p not in ("velocity", "velocity_latentgeo"):
            raise LatentgeoError(f"{what} needs parametrization='velocity' (SD3/FLUX convention) or "
                                 f"'velocity_latentgeo' to be used as a flow, got {p!r}; pass the one its velocity "
                                 "follows")
        ts = 1.0 if time_scale is None else _num(time_scale, "time_scale")
        f = AsLatentgeoFlow(model, "rectified_flow" if p == "velocity" else "latentgeo", ts)
        return _attach(_freeze(f, dev, dt) if own else f, spec_d, info)

    if code is not None:
        if spec is not None:
            raise LatentgeoError("got both a model spec and code='module:factory'; pass one of them, not both")
        return wrap(_from_code(code), f"the model from code '{code}'", None, {"source": "code", "code": code})
    if isinstance(spec, dict):
        d = _check_spec_dict(spec, "flow")
        return resolve_flow(d["path"], parametrization=parametrization or d.get("parametrization"),
                            time_scale=time_scale if time_scale is not None else d.get("time_scale"),
                            subfolder=subfolder or d.get("subfolder"), ema=d.get("ema", True) if ema else False,
                            device=dev, dtype=dt, allow_pickle=allow_pickle, allow_torchscript=allow_torchscript)
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, (str, Path))):
        return wrap(spec, f"the {type(spec).__name__}", None, {"source": "module"}, own=False)
    if not isinstance(spec, (str, Path)):
        raise LatentgeoError(f"no flow model given; pass {ACCEPTED}")
    s = str(spec)
    _refuse_code_like(s)
    path = Path(s).expanduser()
    if not path.exists():
        raise LatentgeoError(f"model '{s}' does not exist; pass {ACCEPTED}")
    spec_d = _spec(path, parametrization=parametrization, time_scale=time_scale, subfolder=subfolder,
                   ema=None if ema else False)
    if path.is_dir() and (_pipeline_components(path) is not None or _is_diffusers_model_dir(path)):
        raise LatentgeoError(f"'{path}' is a diffusers folder; diffusers flow transformers (SD3/FLUX) need text "
                             "conditioning and are not loaded as flows — export one with a fixed condition as "
                             "TorchScript and pass it with parametrization='velocity'")
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        from latentgeo.train import load_trained

        model = load_trained(path, ema=ema, device=str(dev), command="latentgeo train flow")
        if not isinstance(model, FlowModel) and p is None:
            raise LatentgeoError(f"'{path}' holds a {type(model).__name__}, not a flow; pass a folder written by "
                                 "`latentgeo train flow` (a diffusion run is a denoiser: resolve_denoiser)")
        return wrap(model, f"the latentgeo {type(model).__name__} in '{path}'", spec_d, {"source": "latentgeo"})
    model, kind = _load_file_model(path, dev, allow_pickle, "flow", allow_torchscript)
    return wrap(model, f"the {kind} file '{path}'", spec_d, {"source": kind})


# ---------------------------------------------------------------------------------------------- encoders


def _factor(vae: nn.Module) -> int:
    r = getattr(vae, "spatial_compression_ratio", None)
    if isinstance(r, int) and r > 0:
        return r
    cfg = vae.config
    blocks = cfg.get("encoder_block_out_channels") or cfg.get("block_out_channels") or [0]
    return 2 ** (len(blocks) - 1)


class DiffusersEncoder(ReferencedModel, nn.Module):
    """A diffusers VAE's encoder as ``x -> z``: images in ``[-1, 1]`` ``[B, C, H, W]`` to latents ``[B, c, h, w]``,
    ``z = (E(x) - shift_factor) * scaling_factor`` (``AutoencoderKL``: ``E(x)`` = the posterior mean, or a sample with
    ``sample=True``; ``AutoencoderDC``: ``latent``; ``VQModel``: the pre-quantisation latents; ``AutoencoderTiny``:
    ``latents``). Per-channel ``latents_mean`` / ``latents_std`` in the config (SDXL-style) are applied as
    ``(E(x) - mean) * scaling_factor / std``. Inputs are cast to the VAE's dtype, outputs back."""

    _resolver = "resolve_encoder"

    def __init__(self, vae: nn.Module, sample: bool = False, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.vae, self.sample, self.generator = vae, bool(sample), generator
        cfg = vae.config
        self.kind = type(vae).__name__
        self.in_channels = int(cfg.get("in_channels", 3))
        self.latent_channels = int(cfg.get("latent_channels", 4))
        sf, sh = cfg.get("scaling_factor"), cfg.get("shift_factor")
        # 0 or a string is an error, never silently 1.0 (the resolver names the config file; this covers in-memory VAEs)
        if sf is not None and not (_finite_number(sf) and sf > 0):
            raise LatentgeoError(f"the {self.kind}'s scaling_factor must be a positive number, got {str(sf)[:40]!r}; "
                                 "fix its config")
        if sh is not None and not _finite_number(sh):
            raise LatentgeoError(f"the {self.kind}'s shift_factor must be a finite number, got {str(sh)[:40]!r}; fix "
                                 "its config")
        self.scaling_factor = 1.0 if sf is None else float(sf)
        self.shift_factor = 0.0 if sh is None else float(sh)
        self.factor = _factor(vae)
        mean, std = cfg.get("latents_mean"), cfg.get("latents_std")
        c = self.latent_channels
        self.register_buffer("latents_mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
                             if mean is not None else None, persistent=False)
        self.register_buffer("latents_std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
                             if std is not None else None, persistent=False)
        self.spec = None
        self.info: Dict[str, Any] = {}

    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def latent_shape(self, sample_shape: Sequence[int]) -> Tuple[int, int, int]:
        """The latent shape ``(c, h, w)`` for samples of shape ``(C, H, W)``, or a one-line error (no computation)."""
        shape = tuple(int(v) for v in sample_shape)
        if len(shape) != 3:
            raise LatentgeoError(f"the diffusers {self.kind} encodes images [C, H, W], but the data have samples of "
                                 f"shape {list(shape)}; use image data")
        c, h, w = shape
        if c != self.in_channels:
            raise LatentgeoError(f"the data have {c} channel(s) but the {self.kind} expects {self.in_channels}; "
                                 f"convert the images (e.g. repeat a gray channel {self.in_channels} times) or use a "
                                 f"VAE trained on {c}-channel images")
        f = self.factor
        if h % f or w % f:
            raise LatentgeoError(f"the {self.kind} downsamples by {f}, but the images are {h}x{w}; pad or resize "
                                 f"them to multiples of {f}")
        return self.latent_channels, h // f, w // f

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled latents ``E(x)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            self.latent_shape(tuple(x.shape[1:]))  # raises the one-line error
        out = self.vae.encode(x.to(self._dtype()))
        if hasattr(out, "latent_dist"):
            dist = out.latent_dist
            return dist.sample(self.generator) if self.sample else dist.mean
        for name in ("latent", "latents"):
            if hasattr(out, name):
                return getattr(out, name)
        return out[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.raw(x).to(x.dtype if x.is_floating_point() else torch.float32)
        if self.latents_mean is not None and self.latents_std is not None:
            return (z - self.latents_mean.to(z)) * self.scaling_factor / self.latents_std.to(z)
        return (z - self.shift_factor) * self.scaling_factor

    def describe(self):
        return {"sample": True} if self.sample else {}


class DiffusersDecoder(ReferencedModel, nn.Module):
    """The inverse of :class:`DiffusersEncoder`'s scaling, then the VAE decoder: ``x = Dec(z / scaling_factor +
    shift_factor)`` (images approximately in ``[-1, 1]``; nothing is clamped)."""

    _resolver = "resolve_encoder"

    def __init__(self, encoder: DiffusersEncoder):
        super().__init__()
        self.enc = encoder
        self.spec = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = self.enc
        if e.latents_mean is not None and e.latents_std is not None:
            zr = z * e.latents_std.to(z) / e.scaling_factor + e.latents_mean.to(z)
        else:
            zr = z / e.scaling_factor + e.shift_factor
        out = e.vae.decode(zr.to(e._dtype()))
        x = out.sample if hasattr(out, "sample") else out[0]
        return x.to(z.dtype)


def resolve_encoder(spec: Any = None, *, decoder: Any = None, subfolder: Optional[str] = None, sample: bool = False,
                    code: Optional[str] = None, device: Any = "cpu", dtype: Any = None,
                    allow_pickle: bool = False,
                    allow_torchscript: bool = False) -> Tuple[nn.Module, Optional[nn.Module], Dict[str, Any]]:
    """``(encoder x -> z, decoder z -> x or None, info)`` for ``spec``: a latentgeo autoencoder run (normalised
    latents, :func:`latentgeo.autoencoders.load_encoder`), a diffusers VAE (pipeline folder with ``vae/`` or
    ``vqvae/``, or a VAE model folder: :class:`DiffusersEncoder` / :class:`DiffusersDecoder`), a TorchScript /
    export file ``x -> z`` (``decoder=`` another file for ``z -> x``), ``code="module:factory"`` (returning an
    encoder or ``(encoder, decoder)``) or an in-memory module. ``info``: ``source``, ``spec`` (JSON, or None),
    and for diffusers ``input_range`` [-1, 1], ``scaling_factor``, ``shift_factor``, ``latent_channels``,
    ``downsample``. Check the data against the encoder before any work with :func:`check_input_shape`."""
    dev, dt = _device(device), _dtype(dtype)

    def dec_of(dspec):
        if dspec is None:
            return None
        if isinstance(dspec, nn.Module) or (callable(dspec) and not isinstance(dspec, (str, Path))):
            return _freeze(dspec, dev, dt)
        dp = Path(str(dspec)).expanduser()
        _refuse_code_like(str(dspec))
        if not dp.is_file():
            raise LatentgeoError(f"decoder '{dspec}' does not exist; pass a TorchScript file")
        return _freeze(_load_file_model(dp, dev, allow_pickle, "decoder", allow_torchscript)[0], dev, dt)

    if code is not None:
        if spec is not None:
            raise LatentgeoError("got both an encoder spec and code='module:factory'; pass one of them, not both")
        obj = _from_code(code)
        enc, dec = (obj if isinstance(obj, tuple) and len(obj) == 2 else (obj, None))
        return _freeze(enc, dev, dt), (dec_of(dec) if dec is not None else dec_of(decoder)), \
            {"source": "code", "code": code, "spec": None}
    if isinstance(spec, dict):
        d = _check_spec_dict(spec, "encoder")
        return resolve_encoder(d["path"], decoder=decoder if decoder is not None else d.get("decoder"),
                               subfolder=subfolder or d.get("subfolder"), sample=sample or bool(d.get("sample")),
                               device=dev, dtype=dt, allow_pickle=allow_pickle, allow_torchscript=allow_torchscript)
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, (str, Path))):
        dec = decoder if decoder is None or isinstance(decoder, nn.Module) or callable(decoder) else dec_of(decoder)
        return spec, dec, {"source": "module", "spec": None}
    if not isinstance(spec, (str, Path)):
        raise LatentgeoError(f"no encoder given; pass {ACCEPTED}")
    s = str(spec)
    _refuse_code_like(s)
    path = Path(s).expanduser()
    if not path.exists():
        raise LatentgeoError(f"encoder '{s}' does not exist; pass {ACCEPTED}")
    spec_d = _spec(path, subfolder=subfolder, sample=True if sample else None,
                   decoder=str(Path(str(decoder)).expanduser().resolve()) if isinstance(decoder, (str, Path)) else None)
    if path.is_dir():
        comps = _pipeline_components(path)
        if comps is not None or _is_diffusers_model_dir(path):
            if comps is not None:
                sub = subfolder or next((c for c in _VAE_SUBFOLDERS if c in comps), None)
                if sub is None:
                    raise LatentgeoError(f"'{path}' has no vae/ folder, so it holds no encoder (it has: "
                                         f"{', '.join(comps) or 'nothing'}); pass a VAE folder")
                vdir, expected = path / sub, comps.get(sub)
            else:
                vdir, expected = path, None
            vae, name = _load_diffusers_model(vdir, _VAE_CLASSES, dev, dt, allow_pickle, expected)
            enc = DiffusersEncoder(vae, sample=sample).to(dev)
            dec = DiffusersDecoder(enc)
            enc.spec = dec.spec = spec_d
            info = {"source": "diffusers", "class": name, "spec": spec_d, "input_range": [-1.0, 1.0],
                    "scaling_factor": enc.scaling_factor, "shift_factor": enc.shift_factor,
                    "latent_channels": enc.latent_channels, "downsample": enc.factor, "in_channels": enc.in_channels}
            enc.info = info
            return enc.eval(), dec.eval(), info
        if subfolder is not None:
            raise LatentgeoError(f"subfolder= is for diffusers pipeline folders; '{path}' is not one")
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        from latentgeo.autoencoders import Encoder, load_decoder, load_encoder
        from latentgeo.autoencoders.training import run_folder_kind

        if path.is_dir() and run_folder_kind(path) in ("diffusion", "flow"):
            raise LatentgeoError(f"'{path}' is a {run_folder_kind(path)} run, not an autoencoder; pass the --out "
                                 "folder of `latentgeo train ae` or a diffusers VAE folder")
        enc = load_encoder(path)
        if not isinstance(enc, Encoder):  # pragma: no cover - load_encoder checks this
            raise LatentgeoError(f"'{path}' holds no latentgeo encoder; pass the folder of `latentgeo train ae` "
                                 "or a diffusers VAE folder")
        dec = None
        if path.is_dir() and (path / "decoder.safetensors").is_file():
            dec = _freeze(load_decoder(path), dev, dt)
        elif decoder is not None:
            dec = dec_of(decoder)
        return _freeze(enc, dev, dt), dec, {"source": "latentgeo", "spec": _spec(path),
                                            "latent_dim": int(enc.latent_dim)}
    model, kind = _load_file_model(path, dev, allow_pickle, "encoder", allow_torchscript)
    return _freeze(model, dev, dt), dec_of(decoder), {"source": kind, "spec": spec_d}


def check_input_shape(encoder: Callable, sample_shape: Sequence[int]) -> Tuple[int, ...]:
    """The latent shape (without the batch axis) ``encoder`` gives for samples of shape ``sample_shape``, or a
    one-line :class:`LatentgeoError` (e.g. 1-channel data into a 3-channel VAE). Free for diffusers and latentgeo
    encoders (read from their configs); other encoders run once on a single zero sample."""
    shape = tuple(int(v) for v in sample_shape)
    if isinstance(encoder, DiffusersEncoder):
        return encoder.latent_shape(shape)
    try:
        from latentgeo.autoencoders import Encoder
    except ImportError:  # pragma: no cover
        Encoder = ()  # type: ignore[assignment]
    if isinstance(encoder, Encoder):
        if math.prod(shape) != math.prod(encoder.in_shape):
            raise LatentgeoError(f"the encoder was trained on samples of shape {list(encoder.in_shape)}, but the data "
                                 f"have shape {list(shape)}; use the data it was trained on")
        return (int(encoder.latent_dim),)
    p = next(iter(encoder.parameters()), None) if isinstance(encoder, nn.Module) else None
    x = torch.zeros((1, *shape), dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
                    device=p.device if p is not None else "cpu")
    try:
        with torch.no_grad():
            z = encoder(x)
    except LatentgeoError:
        raise
    except Exception as exc:
        msg = (str(exc).strip().splitlines() or [""])[0][:160]
        raise LatentgeoError(f"the encoder cannot take samples of shape {list(shape)} ({type(exc).__name__}: {msg}); "
                             "check that the data match what it was trained on") from None
    z = getattr(z, "sample", z)
    if not isinstance(z, torch.Tensor):
        raise LatentgeoError(f"the encoder returned a {type(z).__name__}, not a tensor of latents; "
                             "make it return the latents as a torch tensor")
    return tuple(int(v) for v in z.shape[1:])


# ---------------------------------------------------------------------------------------------- public loaders
#
# ``latentgeo.load_denoiser`` / ``load_flow`` / ``load_encoder`` / ``load_decoder``: the resolver under the names
# users reach for, so that the library accepts exactly what the command line accepts (one implementation).


def load_denoiser(spec: Any = None, ema: bool = True, device: Any = "cpu", **options: Any) -> nn.Module:
    """The model named by ``spec`` as a VE denoiser ``D(x, sigma)`` -- a latentgeo run or checkpoint, a diffusers
    pipeline / UNet folder (``schedule=`` when it has no scheduler), a TorchScript file (``allow_torchscript=True``
    and ``parametrization=``), ``code="module:factory"``, ... Same as :func:`resolve_denoiser` (``options``:
    ``parametrization``, ``schedule``, ``sigma_data``, ``time_scale``, ``sigma_range``, ``subfolder``, ``code``,
    ``dtype``, ``allow_pickle``, ``allow_torchscript``, ``extrapolate``)."""
    return resolve_denoiser(spec, ema=ema, device=device, **options)


def load_flow(spec: Any = None, ema: bool = True, device: Any = "cpu", **options: Any) -> nn.Module:
    """The model named by ``spec`` as a latentgeo-convention flow ``v(x, t)``; same as :func:`resolve_flow`."""
    return resolve_flow(spec, ema=ema, device=device, **options)


def load_encoder(spec: Any = None, device: Any = "cpu", **options: Any) -> nn.Module:
    """The encoder ``x -> z`` named by ``spec`` (a latentgeo autoencoder run: normalised latents; a diffusers VAE
    pipeline or model folder; a TorchScript file with ``allow_torchscript=True``; ``code=``); the encoder of
    :func:`resolve_encoder` (which also gives the decoder and an info dict)."""
    return resolve_encoder(spec, device=device, **options)[0]


def load_decoder(spec: Any = None, device: Any = "cpu", **options: Any) -> nn.Module:
    """The decoder ``z -> x`` that goes with :func:`load_encoder` of the same ``spec`` (a latentgeo autoencoder run,
    a diffusers VAE, or ``decoder=`` a TorchScript file with ``allow_torchscript=True``); one line when it has
    none."""
    enc, dec, _ = resolve_encoder(spec, device=device, **options)
    if dec is None:
        raise LatentgeoError(f"'{spec}' has no decoder; pass an autoencoder folder with decoder.safetensors, a "
                             "diffusers VAE, or decoder= a TorchScript file (with allow_torchscript=True)")
    return dec
