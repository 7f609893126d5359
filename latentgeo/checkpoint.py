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
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from latentgeo.errors import LatentgeoError

__all__ = ["register_module", "save", "load", "save_state", "load_state", "atomic_write_bytes",
           "atomic_write_json", "module_config"]

_REGISTRY: Dict[str, type] = {}
_FORMAT = "latentgeo-checkpoint-1"


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
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
        meta = json.loads(raw) if raw else {}
    except LatentgeoError:
        raise
    except Exception as exc:  # safetensors raises its own error types on truncation/corruption
        raise LatentgeoError(f"checkpoint '{path}' is corrupt or truncated ({type(exc).__name__}); "
                             "re-save it or load an earlier checkpoint") from exc
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


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", with_meta: bool = False):
    """Rebuild and return the module saved at ``path`` (and its metadata if ``with_meta``)."""
    path = Path(path)
    if path.suffix != ".safetensors" and not path.exists():
        path = path.with_name(path.name + ".safetensors")
    tensors, meta = _read_safetensors(path)
    cls_name = meta.get("class")
    cls = _REGISTRY.get(cls_name)
    if cls is None:
        _import_for(cls_name)
        cls = _REGISTRY.get(cls_name)
    if cls is None:
        raise LatentgeoError(f"checkpoint '{path}' holds a '{cls_name}', which latentgeo does not know; "
                             "import the module that defines it (decorated with register_module) before loading")
    try:
        module = cls(**meta.get("config", {}))
        module.load_state_dict(tensors, strict=True)
    except (TypeError, RuntimeError) as exc:
        raise LatentgeoError(f"checkpoint '{path}' does not match {cls_name} ({str(exc).splitlines()[0]}); "
                             "it was saved by an incompatible version") from exc
    module = module.to(map_location)
    return (module, meta) if with_meta else module


def _import_for(cls_name: Optional[str]) -> None:
    if not cls_name or "." not in cls_name:
        return
    import importlib

    mod = cls_name.rsplit(".", 1)[0]
    try:
        importlib.import_module(mod)
    except ImportError:
        pass


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
    return _unflatten(meta["tree"], tensors)
