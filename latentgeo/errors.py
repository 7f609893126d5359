"""User-facing errors.

Every problem a user can fix (bad shape, NaN, missing dataset, corrupt checkpoint, unknown option value)
is raised as :class:`LatentgeoError` with a one-line message that names the problem and the fix.
The CLI prints it as ``error: <message>`` and exits with code 2 (traceback only with ``--debug``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["LatentgeoError", "check_finite", "check_rank", "check_nonempty", "check_choice", "check_positive",
           "values_readable"]


class LatentgeoError(ValueError):
    """A problem with the user's input, stated with its fix, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def check_finite(x: Any, name: str = "input") -> None:
    """Raise if a tensor/array holds NaN or inf."""
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        ok = bool(torch.isfinite(x).all()) if x.numel() else True
    else:
        arr = np.asarray(x)
        ok = bool(np.isfinite(arr).all()) if arr.size and arr.dtype.kind in "fc" else True
    if not ok:
        raise LatentgeoError(f"{name} contains NaN or inf values; clean or drop those entries before passing it in")


def check_nonempty(x: Any, name: str = "input") -> None:
    n = x.shape[0] if hasattr(x, "shape") and len(x.shape) else len(x)
    if n == 0:
        raise LatentgeoError(f"{name} is empty (0 samples); pass at least one sample")


def check_rank(x: Any, ranks: int | Sequence[int], name: str = "input", what: str = "") -> None:
    """Raise unless ``x.ndim`` is one of ``ranks``; ``what`` describes the expected layout, e.g. '[B, D]'."""
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if x.ndim not in ranks:
        exp = " or ".join(str(r) for r in ranks)
        hint = f" {what}" if what else ""
        raise LatentgeoError(
            f"{name} has {x.ndim} dimensions (shape {tuple(x.shape)}) but {exp} were expected{hint}; reshape it"
        )


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise LatentgeoError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")
    return value


def check_positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise LatentgeoError(f"{name} must be a positive finite number, got {value!r}; pass a value > 0")
    return value


def values_readable(t: Any) -> bool:
    """False where a tensor's values cannot be read without breaking a transform: inside torch.func transforms
    (vmap / jvp / grad wrappers) and make_fx / torch.compile tracing. Input checks that read values (NaN, sign,
    range) skip themselves there; the traced computation checks its outputs instead."""
    import torch

    if not isinstance(t, torch.Tensor):
        return True
    try:
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return False
    except AttributeError:  # pragma: no cover - older torch
        pass
    try:
        from torch.fx.experimental.proxy_tensor import get_proxy_mode

        if get_proxy_mode() is not None:
            return False
    except ImportError:  # pragma: no cover
        pass
    try:
        if torch.jit.is_tracing():
            return False
    except AttributeError:  # pragma: no cover
        pass
    return not torch.compiler.is_compiling()
