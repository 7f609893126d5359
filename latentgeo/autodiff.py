"""Jacobian-vector products that work where forward-mode AD does not: the one place estimators take JVPs.

``torch.func.jvp`` (forward mode) is the cheapest JVP, but many ops have no forward-mode formula, or a broken one:
on CPU ``_scaled_dot_product_flash_attention_for_cpu`` (every diffusers attention block through
``F.scaled_dot_product_attention``), ``aten::silu_backward`` (SiLU's tangent under ``torch.no_grad``, hit by a JVP of
a JVP), ``native_group_norm``'s tangent for non-contiguous tangents (a GroupNorm after an attention block), custom
``autograd.Function`` s without ``jvp``. :func:`jvp` tries, in order, and remembers per function / module (``key``)
the first that worked, so later calls go straight to it:

1. ``"forward"``: ``torch.func.jvp`` as is.
2. ``"forward_math"``: ``torch.func.jvp`` with scaled-dot-product attention forced to its math decomposition
   (:func:`math_attention`) and grad mode on (SiLU then uses its differentiable backward formula). Same cost as 1.
3. ``"reverse"``: the double-VJP trick. ``g(u) = J^T u`` is linear in ``u``, so ``J v = d/du <g(u), v>``: one
   forward pass, one reverse pass that keeps its graph and a reverse pass through that, at ``u = 0``. Runs under
   :func:`math_attention` too (flash attention's backward has no derivative). Outside torch.func transforms it uses
   ``torch.autograd.grad(..., create_graph=True)`` (works for old-style ``autograd.Function`` s too); inside them
   (``vmap`` over tangents: the primal and the first reverse pass are then shared by all of them) ``torch.func.vjp``.
   Either way an outer ``torch.autograd`` can differentiate the result again. Measured cost:
   ``benchmarks/ad_fallback_cost.py``.

Only failures that are specific to forward mode move on to the next stage: ``NotImplementedError`` / ``RuntimeError``
whose message names a missing derivative ("forward AD", "derivative for ... is not implemented", "does not support
it"), or any other ``RuntimeError`` when the plain function evaluates fine on the same inputs (a forward-AD bug
such as GroupNorm's). A genuine error (the plain call fails too) is raised as it is. All stages give the same
numbers up to floating-point rounding (the math attention kernel rounds differently from the fused one).

:func:`jvp2` is the second directional derivative ``f''(x)[t, t]`` (a JVP of a JVP) with the same fallbacks, and
:func:`math_attention` is the context that double backward through attention needs (used by the spacetime
estimators whenever they build a graph to differentiate). ``use_mode("reverse")`` forces a stage for every call in
its block (checks, benchmarks); :func:`ad_mode` tells which stage a key ended up with.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import weakref
from typing import Any, Callable, Optional, Sequence, Tuple

import torch

from latentgeo.errors import LatentgeoError

__all__ = ["jvp", "jvp2", "math_attention", "use_mode", "forced_mode", "ad_mode", "reset", "STAGES", "MODES"]

STAGES = ("forward", "forward_math", "reverse")
MODES = ("auto",) + STAGES
_log = logging.getLogger(__name__)

_FORCED: contextvars.ContextVar = contextvars.ContextVar("latentgeo_ad_mode", default=None)
_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_MEMO_STRONG: dict = {}  # keys that cannot be weak-referenced (rare): by id, bounded
_LOCK = threading.Lock()
# messages of missing derivatives ("Trying to use forward AD with X that does not support it", "derivative for X is
# not implemented", autograd.Function without jvp); any other error counts only if the plain call succeeds
_PATTERNS = ("forward ad", "forward-mode", "forward mode", "derivative for", "fw_grad", "forward grad",
             "jvp staticmethod", "override the jvp")


# ------------------------------------------------------------------------------------------------------ contexts
_ATT_LOCK = threading.Lock()
_ATT_STATE = {"depth": 0, "previous": None}


@contextlib.contextmanager
def math_attention():
    """Context: ``F.scaled_dot_product_attention`` uses its math decomposition (plain matmul/softmax ops, which have
    forward-mode and double-backward formulas) instead of the fused flash / memory-efficient kernels. A no-op for
    models without attention.

    The SDPA backend is a process-wide torch flag; this context counts its users across threads (the first entry
    selects the math backend, the last exit restores the previous choice), so concurrent estimators do not undo each
    other's setting. Other code attending at the same time also gets the math kernel (same values, slower)."""
    try:
        from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends, _sdpa_kernel
    except ImportError:  # pragma: no cover - other torch versions: the public, non-counting context
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:
            yield
            return
        with sdpa_kernel([SDPBackend.MATH]):
            yield
        return
    with _ATT_LOCK:
        if _ATT_STATE["depth"] == 0:
            _ATT_STATE["previous"] = _cur_sdpa_kernel_backends()
            _sdpa_kernel([SDPBackend.MATH])
        _ATT_STATE["depth"] += 1
    try:
        yield
    finally:
        with _ATT_LOCK:
            _ATT_STATE["depth"] -= 1
            if _ATT_STATE["depth"] == 0:
                _sdpa_kernel(_ATT_STATE["previous"])
                _ATT_STATE["previous"] = None


@contextlib.contextmanager
def use_mode(mode: str):
    """Force the JVP stage of every :func:`jvp` / :func:`jvp2` call in this block (``"auto"`` = the default
    fallback chain; ``"forward"``, ``"forward_math"`` or ``"reverse"`` = that stage only)."""
    _check_mode(mode)
    tok = _FORCED.set(None if mode == "auto" else mode)
    try:
        yield
    finally:
        _FORCED.reset(tok)


def forced_mode() -> Optional[str]:
    """The stage forced by an enclosing :func:`use_mode` block, or ``None`` (automatic)."""
    return _FORCED.get()


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LatentgeoError(f"unknown JVP mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


# ------------------------------------------------------------------------------------------------------ memo
def _memo_key(f: Callable, key: Any) -> Any:
    if key is not None:
        return key
    return getattr(f, "__self__", f)  # a bound method's module outlives the method object


def _memo_get(k: Any, order: int) -> Optional[str]:
    with _LOCK:
        try:
            return _MEMO.get(k, {}).get(order)
        except TypeError:
            return _MEMO_STRONG.get(id(k), {}).get(order)


def _memo_set(k: Any, order: int, stage: str) -> None:
    with _LOCK:
        try:
            _MEMO.setdefault(k, {})[order] = stage
        except TypeError:
            if len(_MEMO_STRONG) > 256:
                _MEMO_STRONG.clear()
            _MEMO_STRONG.setdefault(id(k), {})[order] = stage


def ad_mode(key: Any, order: int = 1) -> Optional[str]:
    """The stage :func:`jvp` (``order=1``) or :func:`jvp2` (``order=2``) settled on for ``key``; ``None`` if it has
    not been called with that key yet."""
    return _memo_get(_memo_key(key, None), order)


def reset(key: Any = None) -> None:
    """Forget the remembered stage of ``key`` (all keys with ``None``), e.g. after changing a model's attention."""
    with _LOCK:
        if key is None:
            _MEMO.clear()
            _MEMO_STRONG.clear()
            return
        k = _memo_key(key, None)
        try:
            _MEMO.pop(k, None)
        except TypeError:
            _MEMO_STRONG.pop(id(k), None)


# ------------------------------------------------------------------------------------------------------ stages
def _tree_map(fn, t):
    if isinstance(t, torch.Tensor):
        return fn(t)
    if isinstance(t, (tuple, list)):
        return type(t)(_tree_map(fn, u) for u in t)
    if isinstance(t, dict):
        return {k: _tree_map(fn, u) for k, u in t.items()}
    return t


def _jvp_forward(f, primals, tangents):
    return torch.func.jvp(f, primals, tangents)


def _jvp_forward_math(f, primals, tangents):
    grad_was = torch.is_grad_enabled()
    with math_attention(), torch.enable_grad():
        out = torch.func.jvp(f, primals, tangents)
    # grad mode was switched on only for SiLU's differentiable tangent formula: hand back no graph the caller did not
    # ask for (parameters that require grad would otherwise have recorded one)
    return out if grad_was else _tree_map(lambda t: t.detach(), out)


def _leaves(t) -> list:
    if isinstance(t, torch.Tensor):
        return [t]
    if isinstance(t, (tuple, list)):
        return [v for u in t for v in _leaves(u)]
    if isinstance(t, dict):
        return [v for u in t.values() for v in _leaves(u)]
    return []


def _rebuild(like, it):
    if isinstance(like, torch.Tensor):
        return next(it)
    if isinstance(like, (tuple, list)):
        return type(like)(_rebuild(u, it) for u in like)
    if isinstance(like, dict):
        return {k: _rebuild(u, it) for k, u in like.items()}
    return like


def _in_transform(ts) -> bool:
    try:
        is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    except AttributeError:  # pragma: no cover
        return False
    return any(isinstance(t, torch.Tensor) and is_wrapped(t) for t in ts)


def _jvp_reverse_func(f, primals, tangents):
    """Double VJP with ``torch.func.vjp`` (composes with vmap and other torch.func transforms)."""
    out, vjp_fn = torch.func.vjp(f, *primals)
    u = _tree_map(torch.zeros_like, out)
    # vjp_fn(u) = J^T u is linear in u: its VJP along the primal tangents v is J v
    _, vjp2 = torch.func.vjp(vjp_fn, u)
    (tang,) = vjp2(tuple(tangents))
    return out, tang


def _jvp_reverse_autograd(f, primals, tangents):
    """Double VJP with ``torch.autograd.grad`` (also for old-style ``autograd.Function`` s, which torch.func rejects).
    Under grad mode the result keeps its graph (to the primals and parameters), as ``torch.func.jvp``'s does."""
    outer = torch.is_grad_enabled()
    with torch.enable_grad():
        ps = [p if not (isinstance(p, torch.Tensor) and p.is_floating_point()) or (outer and p.requires_grad)
              else p.detach().requires_grad_(True) for p in primals]
        out = f(*ps)
        outs = _leaves(out)
        live = [i for i, o in enumerate(outs) if o.requires_grad]
        diff = [i for i, p in enumerate(ps) if isinstance(p, torch.Tensor) and p.requires_grad]
        us = {i: torch.zeros_like(outs[i], requires_grad=True) for i in live}
        tang = [None] * len(outs)
        if live and diff:
            gs = torch.autograd.grad([outs[i] for i in live], [ps[j] for j in diff], [us[i] for i in live],
                                     create_graph=True, allow_unused=True)
            pairs = [(g, tangents[j]) for g, j in zip(gs, diff) if g is not None and g.requires_grad]
            if pairs:
                res = torch.autograd.grad([g for g, _ in pairs], [us[i] for i in live], [t for _, t in pairs],
                                          create_graph=outer, allow_unused=True)
                for i, t in zip(live, res):
                    tang[i] = t
    tang = [torch.zeros_like(o) if t is None else t for t, o in zip(tang, outs)]
    if not outer:
        outs, tang = [o.detach() for o in outs], [t.detach() for t in tang]
    return _rebuild(out, iter(outs)), _rebuild(out, iter(tang))


def _jvp_reverse(f, primals, tangents):
    with math_attention():
        if _in_transform(primals) or _in_transform(tangents):
            return _jvp_reverse_func(f, primals, tangents)
        return _jvp_reverse_autograd(f, primals, tangents)


_RUN = {"forward": _jvp_forward, "forward_math": _jvp_forward_math, "reverse": _jvp_reverse}


def _mentions_ad(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return any(p in msg for p in _PATTERNS)


def _plain_ok(f: Callable, primals: Sequence[torch.Tensor]) -> bool:
    try:
        with torch.no_grad():
            f(*[p.detach() if isinstance(p, torch.Tensor) else p for p in primals])
        return True
    except Exception:  # noqa: BLE001 - any failure of the plain call means the error was not forward-AD's
        return False


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:160]


def _auto(f: Callable, primals, key: Any, order: int, run: Callable[[str], Any], mode: str):
    mode = _check_mode(mode)
    forced = _FORCED.get()
    if mode == "auto" and forced is not None:
        mode = forced
    if mode != "auto":
        return run(mode)
    k = _memo_key(f, key)
    known = _memo_get(k, order)
    stages = STAGES[STAGES.index(known):] if known else STAGES
    failures = []
    plain = None
    for stage in stages:
        try:
            res = run(stage)
        except LatentgeoError:
            raise
        except (NotImplementedError, RuntimeError) as exc:
            if not _mentions_ad(exc):
                if plain is None:
                    plain = _plain_ok(f, primals)
                if not plain:
                    raise  # the function itself fails: a genuine error, not a missing derivative
            failures.append((stage, exc))
            continue
        if stage != known:
            _memo_set(k, order, stage)
            if failures:
                _log.info("forward-mode JVP unavailable for %s (%s); using the %s stage", type(k).__name__,
                          _first_line(failures[0][1]), stage)
        return res
    what = "; ".join(f"{s}: {_first_line(e)}" for s, e in failures)
    raise LatentgeoError(f"could not take a Jacobian-vector product of {type(k).__name__} with any AD mode ({what}); "
                         "make the function differentiable with torch ops (or give its custom autograd.Function a "
                         "backward that is itself differentiable)") from failures[-1][1]


def _as_tuple(t) -> Tuple:
    return tuple(t) if isinstance(t, (tuple, list)) else (t,)


def _check_pairs(primals, tangents) -> None:
    if len(primals) != len(tangents):
        raise LatentgeoError(f"jvp got {len(primals)} primals but {len(tangents)} tangents; pass one tangent per primal")
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if isinstance(p, torch.Tensor) and isinstance(t, torch.Tensor) and p.shape != t.shape:
            raise LatentgeoError(f"tangent {i} has shape {tuple(t.shape)} but its primal has {tuple(p.shape)}; pass "
                                 "tangents shaped like the inputs")


# ------------------------------------------------------------------------------------------------------ public
def jvp(f: Callable, primals, tangents, *, key: Any = None, mode: str = "auto"):
    """``(f(*primals), J_f(primals) tangents)``, like ``torch.func.jvp``, with the fallbacks of the module docstring.

    Args:
        f: a function of tensors returning a tensor or a tuple/list/dict of tensors.
        primals, tangents: tuples (a single tensor is accepted) of equally shaped tensors.
        key: the object whose stage is remembered (default ``f``, or the module of a bound method); pass the model
            when ``f`` is a closure made afresh on every call.
        mode: ``"auto"`` (fallback chain), or one stage: ``"forward"``, ``"forward_math"``, ``"reverse"``.
    Works inside ``torch.func.vmap`` and under ``torch.no_grad``; the result is differentiable in the primals (and in
    parameters) when an outer autograd graph is being recorded.
    """
    primals, tangents = _as_tuple(primals), _as_tuple(tangents)
    _check_pairs(primals, tangents)
    return _auto(f, primals, key, 1, lambda st: _RUN[st](f, primals, tangents), mode)


def jvp2(f: Callable, x: torch.Tensor, t: torch.Tensor, *, key: Any = None, mode: str = "auto"):
    """``(J_f(x) t, f''(x)[t, t])``: the first and second derivatives of ``s -> f(x + s t)`` at ``s = 0``.

    One stage for both levels (forward over forward, or reverse double-VJPs nested), chosen and remembered as in
    :func:`jvp` (separately from the first-order stage: SiLU, for one, fails only at second order under no_grad).
    """
    _check_pairs((x,), (t,))

    def run(stage):
        inner = _RUN[stage]

        def first(y):
            return inner(f, (y,), (t,))[1]

        return inner(first, (x,), (t,))

    return _auto(f, (x,), key, 2, run, mode)
