"""Exact adapters: other diffusion parametrisations as a VE denoiser ``D(x, sigma) -> E[x0 | x]``.

Each adapter is one formula (derived in its docstring) around a model in its own parametrisation, so that every
latentgeo tool (Fisher curves, spacetime geometry, samplers) runs on it unchanged:

- :class:`VEDenoiser`: the model already is ``D(x, sigma)``; only its trained sigma range is added.
- :class:`VPToVE`: variance-preserving ``eps`` / ``v`` / ``x0`` models (DDPM / Stable Diffusion UNets, score-SDE VP)
  with time as a discrete ``alphas_cumprod`` table (:class:`DiscreteTime`), log-SNR (:class:`LogSNRTime`), the
  continuous VP-SDE (:class:`VPSDETime`), sigma itself (:class:`SigmaTime`) or any callable.
- :class:`EDMToVE`: an external EDM-preconditioned network ``F``: ``D = c_skip x + c_out F(c_in x, c_noise)``.
- :class:`FlowToVE`: flow-matching / rectified-flow velocity models (SD3 / FLUX convention, or latentgeo's own
  :class:`latentgeo.flows.FlowModel` convention). :class:`AsLatentgeoFlow` turns a velocity model (either
  convention) into a latentgeo flow ``v(x, t)`` (for ODE sampling with :func:`latentgeo.flows.flow_sample`).

Common behaviour (:class:`VEAdapter`):

- ``sigma_min`` / ``sigma_max`` attributes: the noise range the model was trained on. ``sigma`` outside it is
  refused with a one-line :class:`LatentgeoError` naming the range — checked for Python numbers and CPU tensors.
  CUDA (any non-CPU) tensors, and tensors inside ``torch.func`` transforms or tracing, cannot be read without a host
  sync: there the out-of-range entries of the OUTPUT are NaN (``torch.where``), never a silently clamped value.
  ``extrapolate=True`` evaluates the model outside its range instead (time maps extrapolate linearly, no clamping).
  The range check allows a relative tolerance :data:`RANGE_RTOL` (float32 round-off of the end points).
- ``sigma = 0`` gives ``D(x, 0) = x``, the exact limit (no model call is used for those entries).
- Dtypes: the formula runs in float64 for float64 input (float32 otherwise); the model gets its own dtype
  (first floating parameter, or ``model_dtype=``) and its output is cast back, so float64 data runs through an
  fp32 / fp16 network. Time arguments go to the model in float32 at least (fp16 cannot hold timestep 999.5).
- Device: everything runs on the device of ``x``; no per-call host syncs (no ``.item()``) in ``forward``.
- Outputs with a ``.sample`` attribute (diffusers), a ``"sample"`` key or tuples are unwrapped; the output must have
  the input's shape (one-line error otherwise).
- ``latentgeo.save(adapter)`` is refused with a one-line error saying how to reference the wrapped model instead
  (its JSON spec, ``adapter.spec`` when it came from :func:`latentgeo.resolve.resolve_denoiser`, which rebuilds the
  same adapter from it). ``adapter.describe()`` gives the JSON description of the parametrisation (without the
  model's path), or None when it holds a Python callable.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn

from latentgeo.diffusion.edm import as_sigma_batch, check_sigma
from latentgeo.errors import LatentgeoError, check_choice, values_readable

__all__ = ["ReferencedModel", "VEAdapter", "VEDenoiser", "VPToVE", "EDMToVE", "FlowToVE", "AsLatentgeoFlow",
           "TimeMap", "DiscreteTime", "LogSNRTime", "VPSDETime", "SigmaTime", "CallableTime",
           "ddpm_alphas_cumprod", "PREDICTIONS", "BETA_SCHEDULES", "RANGE_RTOL"]

#: Relative tolerance of the sigma range check (float32 round-off of ``sigma_min`` / ``sigma_max``).
RANGE_RTOL = 1e-5
_TINY = 1e-20  # stands in for sigma = 0 inside the model call (the output there is replaced by x)

#: Accepted prediction names (diffusers' own names included) -> canonical name.
PREDICTIONS = {"epsilon": "epsilon", "eps": "epsilon", "v": "v", "v_prediction": "v", "x0": "x0", "sample": "x0"}
#: diffusers ``beta_schedule`` values that :func:`ddpm_alphas_cumprod` computes.
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def _readable(t: torch.Tensor) -> bool:
    """True when the values of ``t`` can be read for free: a CPU tensor outside torch.func transforms, tracing
    and compilation."""
    return t.device.type == "cpu" and values_readable(t)


def _hi(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not on Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.6g}"


def _unwrap(out: Any) -> torch.Tensor:
    if hasattr(out, "sample") and isinstance(getattr(out, "sample"), torch.Tensor):
        return out.sample
    if isinstance(out, dict) and "sample" in out:
        return out["sample"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if not isinstance(out, torch.Tensor):
        raise LatentgeoError(f"the wrapped model returned a {type(out).__name__}, not a tensor; wrap it so that it "
                             "returns its prediction as a tensor shaped like its input")
    return out


# ---------------------------------------------------------------------------------------------- time maps


class TimeMap(nn.Module):
    """Maps VE ``sigma`` ``[B]`` to a VP model's time argument ``t`` ``[B]``; ``sigma_min`` / ``sigma_max`` give
    the range it covers. ``describe()`` returns a JSON description (None for a Python callable)."""

    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def describe(self) -> Optional[Dict[str, Any]]:
        return None


class DiscreteTime(TimeMap):
    """Fractional index into a DDPM ``alphas_cumprod`` table ``a_k`` (k = 0 .. T-1).

    ``ln sigma_k = 0.5 ln((1 - a_k)/a_k)`` is interpolated linearly in the index: ``t = k + (ln sigma - ln sigma_k) /
    (ln sigma_{k+1} - ln sigma_k)``, so a sigma ON a table entry gives exactly its integer timestep. Outside the table
    the end segments extrapolate linearly (used only with ``extrapolate=True``; the adapter refuses such sigma
    otherwise). Range: ``[sigma_0, sigma_{T-1}]``. ``round_time=True`` rounds ``t`` (models needing integer steps).
    ``config``: the diffusers scheduler keys the table came from (kept for :meth:`describe`).
    """

    def __init__(self, alphas_cumprod: Any, round_time: bool = False, config: Optional[Dict[str, Any]] = None):
        super().__init__()
        a = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        if a.numel() < 2 or not bool(torch.isfinite(a).all()):
            raise LatentgeoError("alphas_cumprod must hold at least 2 finite values; pass the scheduler's "
                                 "alphas_cumprod")
        if bool((a <= 0).any()) or bool((a >= 1).any()):
            raise LatentgeoError("alphas_cumprod must lie strictly between 0 and 1 (a zero-terminal-SNR entry is "
                                 "sigma = inf); drop such entries, e.g. alphas_cumprod[:-1]")
        log_s = 0.5 * (torch.log1p(-a) - torch.log(a))
        if bool((log_s[1:] <= log_s[:-1]).any()):
            raise LatentgeoError("alphas_cumprod must be strictly decreasing; pass the scheduler's alphas_cumprod")
        self._log_sigmas = log_s  # a plain float64 attribute: module.to(dtype) must not round it (see _apply)
        self.round_time = bool(round_time)
        self.sigma_min = float(log_s[0].exp())
        self.sigma_max = float(log_s[-1].exp())
        self.config = dict(config) if config is not None else None

    def _apply(self, fn, recurse=True):
        # Follow the module's device moves, never its dtype casts (the table stays float64).
        dev = fn(torch.zeros(())).device
        self._log_sigmas = self._log_sigmas.to(device=dev, dtype=_hi(dev))
        return super()._apply(fn, recurse)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        ls = self._log_sigmas
        if ls.device != sigma.device:
            ls = ls.to(device=sigma.device, dtype=_hi(sigma.device))
        q = sigma.to(ls.dtype).log()
        k = torch.searchsorted(ls, q.contiguous()).clamp(1, ls.shape[0] - 1)
        lo, hi = ls[k - 1], ls[k]
        t = (k - 1).to(q.dtype) + (q - lo) / (hi - lo)
        return t.round() if self.round_time else t

    def describe(self) -> Optional[Dict[str, Any]]:
        if self.config is not None:
            return dict(self.config)
        a = 1.0 / (1.0 + (2 * self._log_sigmas.cpu().double()).exp())
        return {"alphas_cumprod": a.tolist()}


class LogSNRTime(TimeMap):
    """``t = log(alpha^2 / s^2) = -2 ln sigma`` (log signal-to-noise ratio) over ``[sigma_min, sigma_max]``."""

    def __init__(self, sigma_min: float = 0.0, sigma_max: float = math.inf):
        super().__init__()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return -2 * sigma.log()

    def describe(self):
        return {"type": "log_snr", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class SigmaTime(TimeMap):
    """``t = sigma`` over ``[sigma_min, sigma_max]``."""

    def __init__(self, sigma_min: float = 0.0, sigma_max: float = math.inf):
        super().__init__()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def describe(self):
        return {"type": "sigma", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class VPSDETime(TimeMap):
    """Continuous VP-SDE (Song et al. 2021) with the linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``t`` in ``[eps, 1]``.

    ``alpha(t)^2 = exp(-B(t))`` with ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``, so
    ``sigma^2 = 1/alpha^2 - 1 = expm1(B)`` and, inverting the quadratic stably,
    ``t = 2 B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B))`` with ``B = log1p(sigma^2)``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-5):
        super().__init__()
        b0, b1, e = float(beta_min), float(beta_max), float(eps)
        if not (b0 >= 0 and b1 >= b0 and b1 > 0 and 0 <= e < 1):
            raise LatentgeoError(f"VP-SDE needs 0 <= beta_min <= beta_max, beta_max > 0 and 0 <= eps < 1, got "
                                 f"beta_min={b0}, beta_max={b1}, eps={e}; pass e.g. the standard beta_min=0.1, "
                                 "beta_max=20, eps=1e-5")
        self.beta_min, self.beta_max, self.eps = b0, b1, e

        def sig(t):
            return math.sqrt(math.expm1(b0 * t + 0.5 * (b1 - b0) * t * t))

        self.sigma_min, self.sigma_max = sig(e), sig(1.0)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(_hi(sigma.device))
        big_b = torch.log1p(s * s)
        d = self.beta_max - self.beta_min
        return 2 * big_b / (self.beta_min + (self.beta_min ** 2 + 2 * d * big_b).sqrt())

    def describe(self):
        return {"type": "vp_sde", "beta_min": self.beta_min, "beta_max": self.beta_max, "eps": self.eps}


class CallableTime(TimeMap):
    """A user's ``sigma -> t`` callable over ``[sigma_min, sigma_max]`` (default ``[0, inf]``)."""

    def __init__(self, fn: Callable, sigma_min: float = 0.0, sigma_max: float = math.inf):
        super().__init__()
        if not callable(fn):
            raise LatentgeoError(f"time must be a name or a callable sigma -> t, got {type(fn).__name__}; "
                                 "pass a function of sigma returning the model's time")
        self.fn = fn
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.fn(sigma)


def ddpm_alphas_cumprod(beta_schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
                        num_train_timesteps: int = 1000, trained_betas: Optional[Sequence[float]] = None,
                        rescale_zero_terminal_snr: bool = False) -> torch.Tensor:
    """``alphas_cumprod`` ``[T]`` of a diffusers DDPM-family scheduler config, computed with the formulas AND the
    float32 arithmetic of ``DDPMScheduler.__init__`` (that is the noise the model was trained with; float64 would
    differ by ~1e-5 relative at the first timesteps), returned as float64: ``linear`` (betas linspace),
    ``scaled_linear`` (linspace of sqrt(beta), squared; Stable Diffusion), ``squaredcos_cap_v2`` (Nichol & Dhariwal
    cosine, beta capped at 0.999), ``sigmoid``; or ``trained_betas``. ``rescale_zero_terminal_snr`` applies Lin et al.
    2023 (the last entry becomes 0, i.e. sigma = inf: drop it before :class:`DiscreteTime`)."""
    T = num_train_timesteps
    if not (isinstance(T, int) and not isinstance(T, bool) and 2 <= T <= 1_000_000):
        raise LatentgeoError(f"num_train_timesteps must be an integer in [2, 1e6], got {T!r}; check the scheduler "
                             "config")
    f32 = torch.float32
    if trained_betas is not None:
        betas = torch.tensor(list(trained_betas), dtype=f32)
    else:
        check_choice(beta_schedule, list(BETA_SCHEDULES), "beta_schedule")
        for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
                raise LatentgeoError(f"{name} must be a number in [0, 1), got {v!r}; check the scheduler config")
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=f32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=f32) ** 2
        elif beta_schedule == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6, 6, T, dtype=f32)) * (beta_end - beta_start) + beta_start
        else:  # squaredcos_cap_v2
            def abar(u):
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=f32)
    if betas.ndim != 1 or betas.numel() < 2 or not bool(torch.isfinite(betas).all()) \
            or bool((betas < 0).any()) or bool((betas >= 1).any()):
        raise LatentgeoError("the betas must be a list of at least 2 numbers in [0, 1); check the scheduler config")
    acp = torch.cumprod(1.0 - betas, 0)
    if rescale_zero_terminal_snr:
        r = acp.sqrt()
        r0, rT = r[0].clone(), r[-1].clone()
        r = (r - rT) * (r0 / (r0 - rT))
        abar_ = r ** 2
        betas = 1 - torch.cat([abar_[0:1], abar_[1:] / abar_[:-1]])
        acp = torch.cumprod(1.0 - betas, 0)
    return acp.to(torch.float64)


# ---------------------------------------------------------------------------------------------- adapters


class ReferencedModel:
    """Mixin for wrappers of external models: ``latentgeo.save`` is refused with a one-line error that says how to
    reference the model instead (``self.spec``, a JSON dict that the resolver named by ``_resolver`` turns back into
    the same wrapper)."""

    spec: Optional[Dict[str, Any]] = None
    _resolver = "resolve_denoiser"

    def describe(self) -> Optional[Dict[str, Any]]:
        """JSON description of the parametrisation (what :mod:`latentgeo.resolve` needs besides the model's path);
        None when it holds a Python callable."""
        return None

    def _save_error(self) -> LatentgeoError:
        name = type(self).__name__
        res = f"latentgeo.resolve.{self._resolver}"
        if self.spec is not None:
            path = self.spec.get("path")
            how = f"pass '{path}' as the model or " if path and len(self.spec) == 1 else ""
            return LatentgeoError(
                f"latentgeo.save cannot store a {name}: it wraps an external model that latentgeo does not "
                f"re-serialise; reference it by its spec instead: {how}{res}(spec) with spec = "
                f"{json.dumps(self.spec)} (the wrapper's .spec) rebuilds it")
        inner = getattr(self, "model", None)
        desc = self.describe()
        if isinstance(inner, nn.Module) and "_latentgeo_class" in vars(inner) and desc is not None:
            return LatentgeoError(
                f"latentgeo.save cannot store a {name} (a wrapper, not a model); save the wrapped "
                f"{type(inner).__name__} with latentgeo.save(wrapper.model, 'model.safetensors') and point the run at "
                f"the spec {json.dumps({'path': 'model.safetensors', **desc})}")
        return LatentgeoError(
            f"latentgeo.save cannot store a {name}: it wraps a {type(inner).__name__} that is not a latentgeo model; "
            "save that model in its own safe format (diffusers: model.save_pretrained(DIR) with its scheduler folder "
            f"beside it; or torch.jit.script(model).save('m.pt')) and reference it by path: {res}(DIR)")

    @property
    def _latentgeo_class(self):  # read first by latentgeo.save (even with config=): refuse there, with the way out
        raise self._save_error()

    @property
    def _latentgeo_config(self):
        raise self._save_error()


class VEAdapter(ReferencedModel, nn.Module):
    """Base class of the adapters: range checks, ``sigma = 0``, dtypes, output unwrapping, the save refusal.

    Subclasses implement ``_denoise(x, s)`` (``x`` and ``s`` ``[B]`` in the working dtype, ``s > 0``) with one
    formula, calling the wrapped model through ``self._net(x_in, t)``.
    """

    def __init__(self, model: Callable, *, sigma_min: float, sigma_max: float, extrapolate: bool = False,
                 model_dtype: Optional[torch.dtype] = None, time_arg: Optional[str] = None):
        super().__init__()
        if not callable(model):
            raise LatentgeoError(f"the model to wrap must be callable (an nn.Module or a function), got "
                                 f"{type(model).__name__}; pass the network itself")
        lo, hi = float(sigma_min), float(sigma_max)
        if not (math.isfinite(lo) and lo >= 0 and hi > lo):
            raise LatentgeoError(f"the sigma range must satisfy 0 <= sigma_min < sigma_max, got [{lo}, {hi}]; "
                                 "pass the noise levels the model was trained on, e.g. 0.002 and 80")
        self.model = model
        self.sigma_min, self.sigma_max = lo, hi
        self.extrapolate = bool(extrapolate)
        self.model_dtype = model_dtype
        self.time_arg = time_arg
        self.learned_variance = False
        self.spec: Optional[Dict[str, Any]] = None  # set by latentgeo.resolve: how to rebuild this adapter
        self.info: Dict[str, Any] = {}

    # -------------------------------------------------------------- helpers
    def _model_dtype(self) -> Optional[torch.dtype]:
        if self.model_dtype is not None:
            return self.model_dtype
        m = self.model
        if isinstance(m, nn.Module):
            for p in m.parameters():
                if p.is_floating_point():
                    return p.dtype
            for b in m.buffers():
                if b.is_floating_point():
                    return b.dtype
        return None

    def _net(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The wrapped model at ``(x_in, t)``: inputs cast to its dtype, output unwrapped, checked and cast back."""
        mdt = self._model_dtype() or x_in.dtype
        tdt = mdt if mdt in (torch.float32, torch.float64) else torch.float32
        xi, ti = x_in.to(mdt), t.to(tdt)
        out = self.model(xi, **{self.time_arg: ti}) if self.time_arg else self.model(xi, ti)
        out = _unwrap(out)
        if self.learned_variance and out.ndim >= 2 and out.shape[1] == 2 * xi.shape[1]:
            out = out[:, : xi.shape[1]]  # learned-variance UNets: prediction first, variance channels after
        if out.shape != xi.shape:
            raise LatentgeoError(f"the wrapped model returned shape {tuple(out.shape)} for input {tuple(xi.shape)}; "
                                 "it must predict a tensor shaped like its input (learned-variance models: pass "
                                 "learned_variance=True)")
        return out.to(x_in.dtype)

    def _range_error(self, bad: Sequence[float]) -> LatentgeoError:
        return LatentgeoError(
            f"sigma {', '.join(_fmt(float(b)) for b in bad)} is outside the range this {type(self).__name__} model "
            f"was trained on, [{_fmt(self.sigma_min)}, {_fmt(self.sigma_max)}]; choose sigmas in that range (e.g. a "
            "grid from adapter.sigma_min to adapter.sigma_max) or pass extrapolate=True (CLI --extrapolate) to "
            "evaluate it outside")

    def _in_range(self, sigma: Any, s: torch.Tensor) -> Optional[torch.Tensor]:
        """Raise for out-of-range sigma that can be read for free; else None, or (unreadable tensors) a [B] mask."""
        if self.extrapolate:
            return None
        lo, hi = self.sigma_min * (1 - RANGE_RTOL), self.sigma_max * (1 + RANGE_RTOL)
        if isinstance(sigma, torch.Tensor):
            if not _readable(sigma):
                return (s == 0) | ((s >= lo) & (s <= hi))
            v = sigma.detach().reshape(-1).double()
            bad = ~((v == 0) | ((v >= lo) & (v <= hi)))
            if bool(bad.any()):
                raise self._range_error(v[bad].unique()[:4].tolist())
            return None
        v = float(sigma)
        if not (v == 0 or lo <= v <= hi):
            raise self._range_error([v])
        return None

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise LatentgeoError(f"x must be a floating-point tensor [B, ...], got "
                                 f"{getattr(x, 'dtype', type(x).__name__)}; convert it with x.float()")
        check_sigma(sigma)
        wdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        xw = x.to(wdt)
        s = as_sigma_batch(sigma, xw)
        mask = self._in_range(sigma, s)
        zero = s == 0
        s_net = torch.where(zero, torch.full_like(s, max(self.sigma_min, _TINY)), s)
        d = self._denoise(xw, s_net)
        view = (-1,) + (1,) * (x.ndim - 1)
        d = torch.where(zero.view(view), xw, d)
        if mask is not None:
            d = torch.where(mask.view(view), d, torch.full_like(d, math.nan))
        return d.to(x.dtype)

    def score(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        """``(D(x, sigma) - x) / sigma^2``."""
        s = as_sigma_batch(sigma, x).view((-1,) + (1,) * (x.ndim - 1))
        return (self(x, sigma) - x) / s ** 2

    def _denoise(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"sigma_min={_fmt(self.sigma_min)}, sigma_max={_fmt(self.sigma_max)}, extrapolate={self.extrapolate}"


class VEDenoiser(VEAdapter):
    """A model that already is a VE denoiser ``D(x, sigma) -> E[x0|x]``: ``D = model(x, sigma)``, with its trained
    range ``[sigma_min, sigma_max]`` (default ``[0, inf]``: no range known) and the common checks."""

    def __init__(self, model: Callable, sigma_min: float = 0.0, sigma_max: float = math.inf, *,
                 extrapolate: bool = False, model_dtype: Optional[torch.dtype] = None):
        super().__init__(model, sigma_min=sigma_min, sigma_max=sigma_max, extrapolate=extrapolate,
                         model_dtype=model_dtype)

    def _denoise(self, x, s):
        return self._net(x, s)

    def describe(self):
        return {"parametrization": "ve", "sigma_range": [self.sigma_min, self.sigma_max]}


class VPToVE(VEAdapter):
    """A variance-preserving model as a VE denoiser.

    VP: ``x_t = alpha x0 + s n`` with ``alpha^2 + s^2 = 1``. It is the VE model at ``sigma = s/alpha`` applied to
    ``x_t / alpha``, so for VE input ``x`` at ``sigma``: ``alpha = 1/sqrt(1 + sigma^2)``, ``s = sigma alpha``,
    ``x_t = alpha x``, and the model's output is turned into ``E[x0|x]``:

    - ``prediction="epsilon"`` (diffusers ``"epsilon"``, also ``"eps"``): ``E[n|x] = eps`` and
      ``x = x0 + sigma n``, so ``D = x - sigma * eps``;
    - ``prediction="x0"`` (diffusers ``"sample"``): ``D = out``;
    - ``prediction="v"`` (diffusers ``"v_prediction"``; ``v = alpha n - s x0``): ``D = alpha x_t - s v``
      (since ``alpha x_t - s v = (alpha^2 + s^2) x0``).

    The model is called as ``model(x_t, t)`` (or ``model(x_t, **{time_arg: t})``) with ``t = time_scale * time(sigma)``
    (shape ``[B]``), ``time`` one of

    - ``"discrete"``: fractional index into ``alphas_cumprod`` (:class:`DiscreteTime`; DDPM / Stable Diffusion);
    - ``"log_snr"``: ``t = -2 ln sigma`` (:class:`LogSNRTime`);
    - ``"vp_sde"``: continuous VP-SDE time with ``beta_min``, ``beta_max``, ``t_eps`` (:class:`VPSDETime`;
      score-SDE models often want ``time_scale=999``);
    - ``"sigma"``: ``t = sigma``; a :class:`TimeMap`; or any callable ``sigma -> t``.

    The trained range comes from the time map (``sigma_min`` / ``sigma_max`` may be given only for ``log_snr``,
    ``sigma`` and callables). A diffusers DDPM ``UNet2DModel``:
    ``VPToVE(unet, time="discrete", alphas_cumprod=sched.alphas_cumprod, prediction=sched.config.prediction_type)``
    (for SD's ``scaled_linear`` schedule the range is about [0.029, 14.6]; sigma = 80 is refused).
    ``learned_variance=True``: the model outputs ``2C`` channels (prediction, then variance); the first ``C`` are used.
    """

    def __init__(self, model: Callable, time: Union[str, Callable, TimeMap] = "log_snr",
                 prediction: str = "epsilon", alphas_cumprod: Optional[Any] = None, round_time: bool = False, *,
                 time_scale: float = 1.0, beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-5,
                 sigma_min: Optional[float] = None, sigma_max: Optional[float] = None, extrapolate: bool = False,
                 learned_variance: bool = False, model_dtype: Optional[torch.dtype] = None,
                 time_arg: Optional[str] = None):
        check_choice(prediction, list(PREDICTIONS), "prediction")
        ranged = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        given = {k: v for k, v in ranged.items() if v is not None}
        lo = 0.0 if sigma_min is None else sigma_min
        hi = math.inf if sigma_max is None else sigma_max
        if alphas_cumprod is not None and time != "discrete":
            raise LatentgeoError("alphas_cumprod is only used with time='discrete'; pass time='discrete'")
        if isinstance(time, TimeMap):
            tmap = time
        elif callable(time):
            tmap = CallableTime(time, lo, hi)
        else:
            check_choice(time, ["discrete", "log_snr", "vp_sde", "sigma"], "time")
            if time == "discrete":
                if alphas_cumprod is None:
                    raise LatentgeoError("time='discrete' needs alphas_cumprod (the DDPM schedule); pass it")
                tmap = DiscreteTime(alphas_cumprod, round_time=round_time)
            elif time == "vp_sde":
                tmap = VPSDETime(beta_min, beta_max, t_eps)
            elif time == "log_snr":
                tmap = LogSNRTime(lo, hi)
            else:
                tmap = SigmaTime(lo, hi)
        if given and not isinstance(tmap, (LogSNRTime, SigmaTime, CallableTime)):
            raise LatentgeoError(f"the sigma range of time '{time if isinstance(time, str) else type(time).__name__}'"
                                 " comes from its schedule; drop sigma_min/sigma_max (use extrapolate=True to go "
                                 "beyond it)")
        if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
            raise LatentgeoError(f"time_scale must be a positive number, got {time_scale!r}; "
                                 "pass the factor the model multiplies its time by, e.g. 1 or 1000")
        super().__init__(model, sigma_min=tmap.sigma_min, sigma_max=tmap.sigma_max, extrapolate=extrapolate,
                         model_dtype=model_dtype, time_arg=time_arg)
        self.time_map = tmap
        self.prediction = PREDICTIONS[prediction]
        self.time_scale = float(time_scale)
        self.learned_variance = bool(learned_variance)
        if isinstance(model, nn.Module) and isinstance(tmap, DiscreteTime):
            p = next(iter(model.parameters()), None)
            if p is not None and p.device.type != "cpu":
                tmap.to(p.device)  # keep the table where the model runs: no per-call host-to-device copy

    @property
    def time(self):
        return self.time_map

    def _t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The model's time argument for sigma ``[B]`` (in sigma's dtype)."""
        t = self.time_map(sigma)
        if self.time_scale != 1.0:
            t = t * self.time_scale
        return t.to(sigma.dtype)

    def _denoise(self, x, s):
        view = (-1,) + (1,) * (x.ndim - 1)
        alpha = (1 + s ** 2).rsqrt().view(view)
        x_t = alpha * x
        out = self._net(x_t, self._t(s))
        if self.prediction == "epsilon":
            return x - s.view(view) * out
        if self.prediction == "x0":
            return out
        return alpha * x_t - (s.view(view) * alpha) * out

    def describe(self):
        sched = self.time_map.describe()
        if sched is None:
            return None
        d = {"parametrization": self.prediction, "schedule": sched}
        if self.time_scale != 1.0:
            d["time_scale"] = self.time_scale
        return d


class EDMToVE(VEAdapter):
    """An external EDM-preconditioned network ``F`` (Karras et al. 2022) as a VE denoiser:
    ``D = c_skip x + c_out F(c_in x, c_noise)`` with ``sd = sigma_data``, ``c_skip = sd^2/(s^2+sd^2)``,
    ``c_out = s sd/sqrt(s^2+sd^2)``, ``c_in = 1/sqrt(s^2+sd^2)`` and ``c_noise = ln(s)/4`` (or the callable
    ``c_noise(sigma)``). Range default ``[0.002, 80]`` (EDM's sampling range; set it to what the model saw)."""

    def __init__(self, model: Callable, sigma_data: float, c_noise: Optional[Callable] = None, *,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, extrapolate: bool = False,
                 model_dtype: Optional[torch.dtype] = None, time_arg: Optional[str] = None):
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise LatentgeoError(f"sigma_data must be a positive number (the data std the network was trained with), "
                                 f"got {sigma_data!r}; pass sigma_data=")
        if c_noise is not None and not callable(c_noise):
            raise LatentgeoError("c_noise must be a callable sigma -> c_noise; pass a function of sigma, or leave "
                                 "it out for the default ln(sigma)/4")
        super().__init__(model, sigma_min=sigma_min, sigma_max=sigma_max, extrapolate=extrapolate,
                         model_dtype=model_dtype, time_arg=time_arg)
        self.sigma_data = float(sigma_data)
        self.c_noise = c_noise

    def _denoise(self, x, s):
        view = (-1,) + (1,) * (x.ndim - 1)
        sd = self.sigma_data
        s2 = s ** 2 + sd ** 2
        c_skip, c_out, c_in = sd ** 2 / s2, s * sd * s2.rsqrt(), s2.rsqrt()
        c_noise = self.c_noise(s) if self.c_noise is not None else s.log() / 4
        return c_skip.view(view) * x + c_out.view(view) * self._net(c_in.view(view) * x, c_noise)

    def describe(self):
        if self.c_noise is not None:
            return None
        return {"parametrization": "edm", "sigma_data": self.sigma_data,
                "sigma_range": [self.sigma_min, self.sigma_max]}


class FlowToVE(VEAdapter):
    """A flow-matching velocity model as a VE denoiser.

    ``convention="rectified_flow"`` (SD3 / FLUX, diffusers ``FlowMatchEulerDiscreteScheduler``):
    ``x_t = (1 - t) x0 + t n``, the model predicts ``v = n - x0`` at ``t in [t_min, t_max]``, called with
    ``time_scale * t`` (diffusers transformers: 1000). ``x_t / (1 - t) = x0 + t/(1 - t) n`` is VE at
    ``sigma = t/(1 - t)``; so ``t = sigma/(1 + sigma)``, ``x_t = x/(1 + sigma)`` and
    ``D = E[x0|x_t] = x_t - t v(x_t, t)`` (since ``x_t - t (n - x0) = x0``).

    ``convention="latentgeo"`` (:class:`latentgeo.flows.FlowModel`, ``latentgeo train flow``): ``x_t = (1 - t) z0 +
    t z1`` with ``z0`` noise, ``z1`` data, ``v = z1 - z0``: VE at ``sigma = (1 - t)/t``, so ``t = 1/(1 + sigma)``,
    ``x_t = x/(1 + sigma)`` and ``D = x_t + (1 - t) v(x_t, t)``. Exact only for flows trained with INDEPENDENT
    coupling (minibatch-OT coupling changes the velocity field).
    """

    CONVENTIONS = ("rectified_flow", "latentgeo")

    def __init__(self, model: Callable, convention: str = "rectified_flow", time_scale: float = 1.0, *,
                 t_min: float = 0.0, t_max: float = 1.0, extrapolate: bool = False,
                 model_dtype: Optional[torch.dtype] = None, time_arg: Optional[str] = None):
        check_choice(convention, list(self.CONVENTIONS), "flow convention")
        if not (0 <= float(t_min) < float(t_max) <= 1):
            raise LatentgeoError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}; "
                                 "pass flow times inside [0, 1] with t_min below t_max")
        if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
            raise LatentgeoError(f"time_scale must be a positive number, got {time_scale!r}; "
                                 "pass the factor the model multiplies its time by, e.g. 1 or 1000")
        a, b = float(t_min), float(t_max)

        def ratio(u, w):  # u / w with u/0 = inf
            return math.inf if w == 0 else u / w

        lo, hi = (ratio(a, 1 - a), ratio(b, 1 - b)) if convention == "rectified_flow" else \
            (ratio(1 - b, b), ratio(1 - a, a))
        super().__init__(model, sigma_min=lo, sigma_max=hi, extrapolate=extrapolate, model_dtype=model_dtype,
                         time_arg=time_arg)
        self.convention, self.time_scale, self.t_min, self.t_max = convention, float(time_scale), a, b

    def _denoise(self, x, s):
        view = (-1,) + (1,) * (x.ndim - 1)
        x_t = x / (1 + s).view(view)
        if self.convention == "rectified_flow":
            t = s / (1 + s)
            return x_t - t.view(view) * self._net(x_t, self.time_scale * t)
        t = 1 / (1 + s)
        return x_t + (s / (1 + s)).view(view) * self._net(x_t, self.time_scale * t)

    def describe(self):
        return _describe_flow(self.convention, self.time_scale)


def _describe_flow(convention: str, time_scale: float) -> Dict[str, Any]:
    """The resolver spec fields of a velocity model (shared by :class:`FlowToVE` and :class:`AsLatentgeoFlow`)."""
    d: Dict[str, Any] = {"parametrization": "velocity" if convention == "rectified_flow" else "velocity_latentgeo"}
    if time_scale != 1.0:
        d["time_scale"] = time_scale
    return d


class AsLatentgeoFlow(ReferencedModel, nn.Module):
    """A velocity model as a latentgeo flow ``v(x, t)`` (``x_t = (1 - t) z0 + t z1``, noise ``z0`` at ``t = 0``, data
    at ``t = 1``, ``v = z1 - z0``), for ODE sampling with :func:`latentgeo.flows.flow_sample`.

    ``convention="rectified_flow"`` (SD3 / FLUX: ``x = (1 - t_rf) x0 + t_rf n``, ``v_rf = n - x0``): the same path
    with ``t = 1 - t_rf``, so ``v(x, t) = -v_rf(x, time_scale (1 - t))``. ``convention="latentgeo"``:
    ``v(x, t) = model(x, time_scale t)``. Inputs are cast to the model's dtype and the output back.
    """

    _resolver = "resolve_flow"

    def __init__(self, model: Callable, convention: str = "rectified_flow", time_scale: float = 1.0):
        super().__init__()
        check_choice(convention, list(FlowToVE.CONVENTIONS), "flow convention")
        if not callable(model):
            raise LatentgeoError(f"the flow model must be callable, got {type(model).__name__}; "
                                 "pass the velocity network itself")
        self.model, self.convention, self.time_scale = model, convention, float(time_scale)
        self.spec: Optional[Dict[str, Any]] = None
        self.info: Dict[str, Any] = {}

    def describe(self):
        return _describe_flow(self.convention, self.time_scale)

    def forward(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        p = next(iter(self.model.parameters()), None) if isinstance(self.model, nn.Module) else None
        dt = p.dtype if p is not None and p.is_floating_point() else x.dtype
        tdt = dt if dt in (torch.float32, torch.float64) else torch.float32
        if self.convention == "rectified_flow":
            out = -_unwrap(self.model(x.to(dt), (self.time_scale * (1 - t)).to(tdt)))
        else:
            out = _unwrap(self.model(x.to(dt), (self.time_scale * t).to(tdt)))
        if out.shape != x.shape:
            raise LatentgeoError(f"the flow model returned shape {tuple(out.shape)} for input {tuple(x.shape)}; it "
                                 "must return a velocity shaped like its input")
        return out.to(x.dtype)
