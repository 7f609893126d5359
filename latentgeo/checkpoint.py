"""Checkpoints: safetensors for tensors, JSON for everything else; written atomically; never unpickled.

- ``save(module, path, config=None)`` writes ``path`` (``.safetensors``) with the module's weights and, in the file's
  metadata and in a sidecar ``<stem>.json``, the class name, constructor arguments and library versions.
- ``load(path)`` rebuilds the module (its class must be registered with :func:`register_module`) and loads the
  weights strictly. A truncated or corrupt file raises :class:`LatentgeoError`.
- ``save_state`` / ``load_state`` store any nested dict/list of tensors, numbers and strings (optimiser state, RNG
  states, EMA weights) the same way, for exact ``--resume``.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from latentgeo.errors import LatentgeoError
from latentgeo.runfolder import loads_json, read_json  # noqa: F401  (re-exported: one reader of JSON records)

__all__ = ["register_module", "save", "load", "save_state", "load_state", "atomic_write_bytes",
           "atomic_write_json", "module_config", "registered_class", "validate_config", "read_json"]

_REGISTRY: Dict[str, type] = {}
_FORMAT = "latentgeo-checkpoint-1"
# Nesting allowed in a checkpoint's metadata: state files (save_state) nest 3 JSON levels per level of the state.
_META_DEPTH = 400


def register_module(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load` and record its constructor arguments.

    Constructor arguments must be JSON-serialisable (numbers, strings, lists, dicts, None).
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    _REGISTRY[name] = cls
    _REGISTRY.setdefault(cls.__qualname__, cls)
    orig_init = cls.__init__
    sig = inspect.signature(orig_init)

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        if not hasattr(self, "_latentgeo_config"):
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            cfg = {}
            for k, v in list(bound.arguments.items())[1:]:
                p = sig.parameters[k]
                if p.kind == inspect.Parameter.VAR_KEYWORD:
                    cfg.update(v)
                elif p.kind == inspect.Parameter.VAR_POSITIONAL:
                    if v:
                        raise TypeError(f"{name}: *args cannot be recorded in a checkpoint config")
                else:
                    cfg[k] = v
            object.__setattr__(self, "_latentgeo_config", cfg)
            object.__setattr__(self, "_latentgeo_class", name)
        orig_init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def module_config(module: torch.nn.Module) -> Dict[str, Any]:
    """The recorded constructor arguments of a registered module."""
    cfg = getattr(module, "_latentgeo_config", None)
    if cfg is None:
        raise LatentgeoError(f"{type(module).__name__} is not registered with latentgeo.checkpoint.register_module; "
                             "decorate the class or pass config= explicitly")
    return dict(cfg)


def _versions() -> Dict[str, str]:
    import numpy
    import safetensors

    from latentgeo._version import __version__

    return {"latentgeo": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": getattr(safetensors, "__version__", "?")}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode open() would (0666 less the umask), as users expect
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not getattr(exc, "filename", None):  # ENOSPC & co. name no file: name it
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, (Path,)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_safetensors(path: Path, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = st_save(tensors, metadata={"latentgeo": json.dumps(meta, default=_json_default)})
    atomic_write_bytes(path, data)


def _read_safetensors(path: str | os.PathLike) -> tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise LatentgeoError(f"'{path}' is a folder, not a checkpoint file; pass the .safetensors file inside it")
    if not path.exists():
        raise LatentgeoError(f"checkpoint '{path}' does not exist; check the path or train the model first")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("latentgeo")
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except LatentgeoError:
        raise
    except Exception as exc:  # safetensors raises its own error types on truncation/corruption
        raise LatentgeoError(f"checkpoint '{path}' is corrupt or truncated ({type(exc).__name__}); "
                             "re-save it or load an earlier checkpoint") from exc
    fix = "re-save it with latentgeo.save or use an intact copy"
    where = f"the latentgeo metadata of checkpoint '{path}' (edited, or not written by latentgeo)"
    meta = loads_json(raw, where, fix, max_depth=_META_DEPTH) if raw else {}
    if not isinstance(meta, dict):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise LatentgeoError(f"{where} is {shown!r}, not a JSON object; {fix}")
    if not isinstance(meta.get("extra", {}), dict):
        raise LatentgeoError(f"{where} has an 'extra' entry of type {type(meta['extra']).__name__}, not a JSON "
                             f"object; {fix}")
    if meta.get("format") != _FORMAT:
        raise LatentgeoError(f"'{path}' is a safetensors file but not a latentgeo checkpoint (no latentgeo metadata); "
                             "save it with latentgeo.save")
    return tensors, meta


def save(module: torch.nn.Module, path: str | os.PathLike, config: Optional[Dict[str, Any]] = None,
         extra: Optional[Dict[str, Any]] = None) -> Path:
    """Save ``module`` to ``path`` (suffix ``.safetensors`` added if missing) plus a ``.json`` sidecar.

    ``config`` defaults to the constructor arguments recorded by :func:`register_module`; ``extra`` is any
    JSON-serialisable information to keep with the weights (e.g. sigma_data, latent normalisation).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    cls = getattr(module, "_latentgeo_class", f"{type(module).__module__}.{type(module).__qualname__}")
    cfg = module_config(module) if config is None else dict(config)
    meta = {"format": _FORMAT, "class": cls, "config": cfg, "extra": extra or {}, "versions": _versions()}
    state = module.state_dict()
    # Tied/shared tensors would be rejected by safetensors: store each storage once.
    _write_safetensors(path, {k: v.clone() for k, v in state.items()}, meta)
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


# latentgeo's own modules that register classes. This constant table is the ONLY thing :func:`load` ever imports;
# nothing named inside a file is imported, looked up as an attribute or called.
_BUILTIN_MODULES = ("latentgeo.nets", "latentgeo.diffusion", "latentgeo.flows", "latentgeo.autoencoders",
                    "latentgeo.metrics.classifier")
_JSON_TYPES = (type(None), bool, int, float, str, list, dict)


def registered_class(name: Any, what: str = "class", where: str = "") -> type:
    """The class registered under ``name`` (full dotted name or bare class name) — from the registry only.

    ``name`` usually comes from a file; it is used as a dictionary key and nothing else. Unknown names raise
    :class:`LatentgeoError`; latentgeo's own modules are imported (from a fixed table) before giving up.
    """
    if not isinstance(name, str) or not name:
        raise LatentgeoError(f"{where}names no {what} (got {name!r}); the file is damaged or was not written by "
                             "latentgeo")
    cls = _REGISTRY.get(name)
    if cls is None:
        _register_builtins()
        cls = _REGISTRY.get(name)
    if cls is None:
        known = sorted(k for k in _REGISTRY if "." not in k)
        lead = f"{where}names the {what} '{name[:80]}', which is" if where else f"the {what} '{name[:80]}' is"
        raise LatentgeoError(f"{lead} not registered with latentgeo "
                             f"(known: {', '.join(known)}); latentgeo never imports classes named in files — "
                             "register your own class with latentgeo.register_module in the running process first")
    return cls


def _register_builtins() -> None:
    import importlib

    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:  # an optional dependency of that module is missing; its classes stay unknown
            pass


def validate_config(cls: type, config: Any, where: str = "") -> Dict[str, Any]:
    """Check constructor arguments read from a file before ``cls`` sees them: a dict of JSON values whose keys are
    parameters of ``cls.__init__`` (``**kwargs`` classes accept any key). Returns a copy."""
    if not isinstance(config, dict):
        raise LatentgeoError(f"{where}has a config of type {type(config).__name__}, not a JSON object; the file is "
                             "damaged or was not written by latentgeo")
    sig = inspect.signature(getattr(cls.__init__, "__wrapped__", cls.__init__))
    params = list(sig.parameters.values())[1:]
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}
    for k, v in config.items():
        if not isinstance(k, str) or (k not in names and not takes_any):
            raise LatentgeoError(f"{where}gives {cls.__qualname__} an unknown argument {k!r} (it takes "
                                 f"{', '.join(sorted(names))}); the file was edited or saved by another version")
        _check_json_value(v, f"{where}argument '{k}'")
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in config
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise LatentgeoError(f"{where}lacks the {cls.__qualname__} argument(s) {', '.join(missing)}; the file was "
                             "edited or saved by another version")
    return dict(config)


def _check_json_value(v: Any, what: str, depth: int = 0) -> None:
    if depth > 8 or not isinstance(v, _JSON_TYPES):
        raise LatentgeoError(f"{what} is not a plain JSON value; the file was edited")
    if isinstance(v, float) and not math.isfinite(v):
        raise LatentgeoError(f"{what} is {v}, not a finite number; the file was edited")
    if isinstance(v, list):
        for u in v:
            _check_json_value(u, what, depth + 1)
    if isinstance(v, dict):
        for k, u in v.items():
            if not isinstance(k, str):
                raise LatentgeoError(f"{what} has a non-string key; the file was edited")
            _check_json_value(u, what, depth + 1)


def _build_checked(cls: type, cfg: Dict[str, Any], tensors: Dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    """Build ``cls(**cfg)`` — first on the meta device (no memory), so that a config edited to absurd sizes is
    refused, by comparing the parameter count it asks for with the weights actually stored, before anything is
    allocated. (Shapes are compared strictly by ``load_state_dict`` afterwards, which also runs the classes'
    own hooks for checkpoints of earlier versions.)"""
    where = f"checkpoint '{path}' "
    try:
        with torch.device("meta"):
            probe = cls(**cfg)
        wanted = sum(v.numel() for v in probe.state_dict().values())
    except LatentgeoError as exc:
        raise LatentgeoError(f"{where}holds invalid settings for {cls.__qualname__}: {exc}") from None
    except Exception:  # a constructor that cannot run on meta tensors: checked after building instead
        wanted = None
    stored = sum(v.numel() for v in tensors.values())
    if wanted is not None and wanted > 4 * stored + 1_000_000:
        raise LatentgeoError(f"{where}does not match {cls.__qualname__}: its settings ask for {wanted:,} weights but "
                             f"the file stores {stored:,} (settings and weights disagree); the file was edited or "
                             "saved by another version")
    try:
        module = cls(**cfg)
        module.load_state_dict(tensors, strict=True)
    except LatentgeoError as exc:
        raise LatentgeoError(f"{where}holds invalid settings for {cls.__qualname__}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LatentgeoError(f"{where}does not match {cls.__qualname__} ({str(exc).splitlines()[0][:200]}); "
                             "the file was edited or saved by another version") from exc
    return module


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", with_meta: bool = False):
    """Rebuild and return the module saved at ``path`` (and its metadata if ``with_meta``).

    Safe on files from strangers: the class comes from the registry (:func:`register_module`; latentgeo's own
    classes are always known), never from importing a name in the file; its arguments are checked against the
    constructor's signature and against the stored weights' shapes before the class is built.
    """
    path = Path(path)
    if path.suffix != ".safetensors" and not path.exists():
        path = path.with_name(path.name + ".safetensors")
    tensors, meta = _read_safetensors(path)
    cls_name = meta.get("class")
    if cls_name == "__state__":
        raise LatentgeoError(f"'{path}' is a training-state file (optimiser and RNG state for --resume), not a "
                             "model; load model.safetensors or ema.safetensors from the same folder")
    cls = registered_class(cls_name, "class", f"checkpoint '{path}' ")
    cfg = validate_config(cls, meta.get("config", {}), f"checkpoint '{path}' ")
    module = _build_checked(cls, cfg, tensors, path)
    module = module.to(map_location)
    return (module, meta) if with_meta else module


# ---------------------------------------------------------------- arbitrary nested state (resume)

def _flatten(obj: Any, tensors: Dict[str, torch.Tensor], prefix: str) -> Any:
    import numpy as np

    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError("state dict keys must be str or int")
        return {"__dict__": [[k, _flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors, prefix) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and obj != obj:
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": "inf" if obj > 0 else "-inf"}
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a latentgeo state file")


def _unflatten(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: Dict[str, Any]) -> Path:
    """Atomically save a nested dict of tensors / arrays / numbers / strings (e.g. optimiser + RNG state)."""
    path = Path(path)
    tensors: Dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors, "")
    meta = {"format": _FORMAT, "class": "__state__", "tree": tree, "versions": _versions()}
    _write_safetensors(path, tensors, meta)
    return path


def load_state(path: str | os.PathLike) -> Dict[str, Any]:
    """Inverse of :func:`save_state` (bit-exact)."""
    tensors, meta = _read_safetensors(path)
    if meta.get("class") != "__state__":
        raise LatentgeoError(f"'{path}' is a model checkpoint, not a training-state file; use latentgeo.load")
    try:
        return _unflatten(meta["tree"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LatentgeoError(f"training-state file '{path}' is damaged ({type(exc).__name__}); resume from an "
                             "intact copy or start a new run folder") from None
