"""Fisher information (FI), Fisher information rate (FIR) and MMSE curves estimated from a denoiser.

For a data law ``mu`` in R^n and VE noise ``x = x0 + sigma * n`` (noise variance ``tau = sigma^2``), with score
``s = (D - x) / tau`` and score Hessian ``H`` (REFERENCE.md §2):

- ``I(tau) = E|s|^2``                                (FI; cross-check ``(n tau - mmse) / tau^2``)
- ``R(tau) = dI/dtau = -E|H|_F^2 = -E|J_D v - v|^2 / tau^2``   (FIR, Hutchinson over probes ``v``)
- ``mmse(tau) = E|D - x0|^2``
- ``mmse'(tau) = E|J_D|_F^2 = E|J_D v|^2``           (MMSE rate, estimated directly: the identity
  ``n - 2 tau I - tau^2 R`` cancels catastrophically at small tau)

Each Jacobian-vector product is one :func:`latentgeo.autodiff.jvp` (forward mode where the denoiser's ops support it,
else the same numbers by a reverse-mode fallback, e.g. through diffusers attention; ``meta["jvp_mode"]`` records which
was used); the probes of a sample are a ``vmap``-ed batch of tangents
sharing one primal pass (about half the cost of stacking probes into the batch, which remains the fallback for
denoisers that cannot be vmapped), and the JVP's primal output gives ``D(x)`` for the FI at no extra cost. Samples are
processed in chunks of ``batch_size // n_probes`` to bound memory.

Numerics at small sigma: ``J_D v - v = tau * (J_s v)`` is a difference of two O(1) vectors when the data are
full-rank. When the denoiser exposes a score directly (``denoiser.score(x, sigma)``, or the exact mixture oracle's
``denoiser.mixture``), the FIR is taken from the score-space JVP instead, which has no cancellation. The generic path
divides by ``sigma^2`` before squaring (never forms ``1/sigma^4`` on its own), so nothing overflows from sigma = 0.002
to 80; use ``dtype=torch.float64`` for the best conditioning.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from latentgeo import autodiff
from latentgeo.errors import LatentgeoError, check_finite, check_nonempty

__all__ = ["FisherCurves", "FisherDeviation", "fisher_curves", "fir_deviation", "default_sigmas"]

_FIELDS = ("sigma", "fi", "fir", "mmse", "mmse_rate", "fi_se", "fir_se", "mmse_se", "mmse_rate_se", "fi_mmse")
_OPTIONAL = ("fi_mmse_se",)  # absent from records written before it existed

# fi_mmse is reported only where it can serve as a cross-check: its Monte-Carlo standard error and its float
# round-off bound must both stay below this fraction of the primary FI estimate (else NaN, listed in meta).
FI_MMSE_REL_TOL = 0.1


def default_sigmas(n: int = 24, sigma_min: float = 0.01, sigma_max: float = 80.0) -> torch.Tensor:
    """Log-spaced noise levels (float64, shape [n]) from ``sigma_min`` to ``sigma_max``."""
    if not (0 < sigma_min < sigma_max):
        raise LatentgeoError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}; fix the range")
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), int(n), dtype=torch.float64)


@dataclass
class FisherCurves:
    """Estimated curves at each noise level. All fields are 1-D float64 tensors of shape [S] (S noise levels).

    ``sigma`` noise std; ``fi`` Fisher information ``E|s|^2``; ``fir`` its tau-derivative (<= 0); ``mmse``;
    ``mmse_rate`` = d mmse / d tau; ``*_se`` Monte-Carlo standard errors (over samples, each sample's value averaged
    over its probes); ``n`` is the data dimension, ``n_samples`` and ``n_probes`` the Monte-Carlo sizes.

    ``fi_mmse`` is the MMSE-identity cross-check of the FI, ``(n tau - mmse) / tau^2``, computed in float64 per
    sample with the applied noise energy ``|x - x0|^2`` (known mean ``n tau``) as a fitted control variate, and its
    standard error ``fi_mmse_se``. It is a difference of two nearly equal O(n tau) numbers divided by ``tau^2``, so
    it cancels catastrophically at small sigma (at sigma = 0.002 its standard error is ~10x the FI even with the
    control variate, ~4000x without). Entries whose standard error or float round-off bound exceeds
    ``FI_MMSE_REL_TOL`` (10%) of ``fi`` are NaN = unavailable (``fi_mmse_ok`` is False there); their sigmas and the
    reason are in ``meta["fi_mmse_unavailable"]`` / ``meta["fi_mmse_note"]`` (``None`` in :meth:`to_dict`/JSON).
    At large sigma it is the more precise FI estimate.
    """

    sigma: torch.Tensor
    fi: torch.Tensor
    fir: torch.Tensor
    mmse: torch.Tensor
    mmse_rate: torch.Tensor
    fi_se: torch.Tensor
    fir_se: torch.Tensor
    mmse_se: torch.Tensor
    mmse_rate_se: torch.Tensor
    fi_mmse: torch.Tensor
    n: int
    n_samples: int = 0
    n_probes: int = 0
    label: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)
    fi_mmse_se: Optional[torch.Tensor] = None

    @property
    def tau(self) -> torch.Tensor:
        """Noise variance ``sigma^2``, shape [S]."""
        return self.sigma ** 2

    @property
    def fi_mmse_ok(self) -> torch.Tensor:
        """Boolean [S]: where the ``fi_mmse`` cross-check is available (not cancelled away; see the class doc)."""
        return torch.isfinite(self.fi_mmse)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (lists of floats; unavailable entries, e.g. ``fi_mmse`` at small sigma, are ``None``)."""
        d: Dict[str, Any] = {k: _json_list(getattr(self, k)) for k in _FIELDS + _OPTIONAL
                             if getattr(self, k) is not None}
        d.update(n=int(self.n), n_samples=int(self.n_samples), n_probes=int(self.n_probes), label=self.label,
                 meta=self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FisherCurves":
        try:
            kw = {k: _from_json_list(d[k]) for k in _FIELDS}
            kw.update({k: _from_json_list(d[k]) for k in _OPTIONAL if d.get(k) is not None})
            return cls(**kw, n=int(d["n"]), n_samples=int(d.get("n_samples", 0)),
                       n_probes=int(d.get("n_probes", 0)), label=str(d.get("label", "")), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise LatentgeoError(f"not a FisherCurves record (missing or bad field: {exc}); pass a file written by "
                                 "FisherCurves.save") from None

    def save(self, path: Union[str, Path]) -> None:
        """Write the curves as JSON (atomically)."""
        from latentgeo.checkpoint import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "FisherCurves":
        from latentgeo.runfolder import read_json

        d = read_json(path, "Fisher curves file", fix="re-create it with FisherCurves.save", want_object=True)
        return cls.from_dict(d)

    def plot(self, path: Optional[Union[str, Path]] = None, axes=None, label: Optional[str] = None, **kw):
        """Plot I(sigma) and -R(sigma) on log-log axes (two panels). Returns the axes; writes ``path`` if given."""
        return plot_curves([self], path=path, axes=axes, labels=[label or self.label or "curve"], **kw)


def _json_list(t: torch.Tensor) -> list:
    """Floats, with non-finite entries as ``None`` (valid JSON; they mark unavailable values)."""
    return [float(v) if math.isfinite(float(v)) else None for v in t]


def _from_json_list(v) -> torch.Tensor:
    return torch.tensor([float("nan") if e is None else e for e in v], dtype=torch.float64)


def plot_curves(curves: Sequence[FisherCurves], path=None, axes=None, labels=None, title: str = ""):
    """Plot FI and |FIR| of several curves side by side (log-log), with +-2 SE bands."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = labels or [c.label or f"curve {i}" for i, c in enumerate(curves)]
    for c, lab in zip(curves, labels):
        s = c.sigma.detach().cpu().numpy()
        for ax, y, se in ((axes[0], c.fi, c.fi_se), (axes[1], -c.fir, c.fir_se)):
            y = y.detach().cpu().numpy()
            se = se.detach().cpu().numpy()
            (line,) = ax.loglog(s, y, label=lab)
            ax.fill_between(s, (y - 2 * se).clip(min=y * 1e-3), y + 2 * se, color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="sigma", ylabel="I(tau)  (Fisher information)")
    axes[1].set(xlabel="sigma", ylabel="-R(tau)  (minus Fisher information rate)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title and fig is not None:
        fig.suptitle(title)
    if path is not None:
        _save_fig(axes[0].figure, path)
    return axes


def _save_fig(fig, path) -> None:
    import io

    from latentgeo.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
def _score_fn(denoiser) -> Optional[Callable]:
    """A direct score function ``s(x, sigma)`` if the denoiser exposes one (better conditioned at small sigma)."""
    fn = getattr(denoiser, "score", None)
    if callable(fn):
        return fn
    mix = getattr(denoiser, "mixture", None)
    if mix is not None and callable(getattr(mix, "score", None)):
        def s(x, sigma):
            shape = x.shape
            return mix.score(x.reshape(shape[0], -1), sigma).reshape(shape)
        return s
    return None


def _edm_parts(denoiser) -> Optional[Callable]:
    """For an EDM-preconditioned denoiser ``D = c_skip x + c_out F(c_in x, c_noise)``, a function returning
    ``(D, D - x)`` from ONE evaluation of ``F``, with ``D - x = (c_skip - 1) x + c_out F`` formed analytically.

    Its JVP gives ``J_D v`` and ``J_D v - v = (c_skip - 1) v + c_out (J_F v)`` without subtracting two O(1)
    vectors, which keeps the FIR accurate at small sigma in float32, at the cost of a single JVP.
    """
    if not (callable(getattr(denoiser, "precond", None)) and isinstance(getattr(denoiser, "net", None),
                                                                          torch.nn.Module)):
        return None
    net = denoiser.net

    def parts(x, sigma):
        c_skip, c_out, c_in, c_noise = denoiser.precond(sigma.to(x.dtype))
        view = (-1,) + (1,) * (x.ndim - 1)
        x_in = x if getattr(net, "raw_input", False) else c_in.view(view) * x
        p = next(net.parameters(), None)
        ndt = p.dtype if p is not None else x.dtype
        f = net(x_in.to(ndt), c_noise.to(ndt)).to(x.dtype)
        # c_skip - 1 = -sigma^2 / (sigma^2 + sd^2), written without the subtraction
        sd2 = denoiser.sigma_data ** 2
        cm1 = -(sigma.to(x.dtype) ** 2) / (sigma.to(x.dtype) ** 2 + sd2)
        r = cm1.view(view) * x + c_out.view(view) * f
        return c_skip.view(view) * x + c_out.view(view) * f, r  # D formed directly: no cancellation at large sigma

    return parts


def _probe_jvps(g: Callable, xb: torch.Tensor, sb: torch.Tensor, V: torch.Tensor, batching: str, key=None):
    """JVPs of ``y -> g(y, sigma)`` at ``xb`` [b, ...] along each probe ``V[p]`` ([P, b, ...]).

    ``key``: the object :func:`latentgeo.autodiff.jvp` remembers its AD stage for (the denoiser).

    Returns ``(primal_out, tangents_out, batching_used)``: primal outputs shaped [b, ...], tangents [P, b, ...]
    (tuples mirror ``g``'s output).
    """
    P = V.shape[0]
    if batching in ("auto", "vmap"):
        try:
            with torch.no_grad():
                prim, tang = torch.func.vmap(lambda t: autodiff.jvp(lambda y: g(y, sb), (xb,), (t,), key=key))(V)
            first = (lambda o: tuple(t[0] for t in o)) if isinstance(prim, tuple) else (lambda o: o[0])
            return first(prim), tang, "vmap"
        except Exception:
            if batching == "vmap":
                raise
            batching = "stack"  # the denoiser cannot be vmapped (e.g. data-dependent control flow): stack probes
    b = xb.shape[0]
    xr = xb.repeat(P, *([1] * (xb.ndim - 1)))
    sr = sb.repeat(P)
    with torch.no_grad():
        prim, tang = autodiff.jvp(lambda y: g(y, sr), (xr,), (V.reshape(P * b, *xb.shape[1:]),), key=key)

    def split(o):
        return o.reshape(P, b, *o.shape[1:])

    if isinstance(prim, tuple):
        return tuple(t[:b] for t in prim), tuple(split(t) for t in tang), batching
    return prim[:b], split(tang), batching


def _gen_device(generator, device):
    """Draw on the generator's device (a CPU generator with CUDA data is common), then move."""
    return generator.device if generator is not None else device


def _probes(shape, kind: str, generator, dtype, device) -> torch.Tensor:
    gd = _gen_device(generator, device)
    if kind == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=gd).to(device=device, dtype=dtype)
        return 2 * v - 1
    return torch.randn(shape, generator=generator, dtype=dtype, device=gd).to(device)


def _check_denoiser_output(denoiser: Callable, x: torch.Tensor, sigma: float) -> None:
    """One plain call on a couple of rows: the output must be a tensor of the input's shape, before any JVP
    (broadcasting would otherwise hide a wrong shape)."""
    with torch.no_grad():
        out = denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))
    if not isinstance(out, torch.Tensor):
        raise LatentgeoError(f"the denoiser returned a {type(out).__name__}, not a tensor; it must return "
                             f"E[x0 | x] as a tensor of the input's shape {tuple(x.shape)}")
    if out.shape != x.shape:
        raise LatentgeoError(f"the denoiser returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
                             "it must return E[x0 | x] with the input's shape")
    if not bool(torch.isfinite(out).all()):
        raise LatentgeoError(f"the denoiser returned NaN/inf at sigma = {sigma:.6g}; check it at that noise level "
                             "(or drop that sigma from the grid)")


def _control_variate(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``y - beta c`` with the variance-minimising ``beta = cov(y, c) / var(c)`` (``c`` has known mean 0).

    For the MMSE identity ``beta`` is about -1 at small sigma (the noise energy dominates ``|D - x0|^2``) and about 0
    at large sigma (``D`` barely depends on the noise); the O(1/N) bias of the fitted ``beta`` is negligible.
    """
    cc = c - c.mean()
    var = float((cc * cc).sum())
    if not (var > 0 and math.isfinite(var)):
        return y
    beta = float(((y - y.mean()) * cc).sum()) / var
    return y - beta * c


def _mean_se(per_sample: torch.Tensor):
    m = per_sample.mean()
    se = per_sample.std(correction=1) / math.sqrt(per_sample.shape[0])
    return float(m), float(se)


def fisher_curves(denoiser: Callable, x0: torch.Tensor, sigmas: Union[Sequence[float], torch.Tensor],
                  n_probes: int = 8, generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
                  dtype: Optional[torch.dtype] = None, probe: str = "rademacher", use_score: Union[str, bool] = "auto",
                  label: str = "", probe_batching: str = "auto") -> FisherCurves:
    """Estimate FI, FIR, MMSE and MMSE-rate curves of the data ``x0`` under a denoiser.

    Args:
        denoiser: callable ``D(x, sigma) -> E[x0 | x]``, ``x`` [B, ...], ``sigma`` [B]. Modules are put in eval mode
            (on a copy when ``dtype`` changes them).
        x0: clean samples [N, ...] (N >= 2); ``n = prod(...)``.
        sigmas: noise levels, [S] positive.
        n_probes: Hutchinson probes per sample (one JVP each).
        generator: torch.Generator for the noise and the probes (reproducible curves).
        batch_size: maximum rows (sample-probe pairs) per denoiser call; default 4096.
        dtype: compute dtype (e.g. ``torch.float64``); default the dtype of ``x0``.
        probe: ``"rademacher"`` (lower variance) or ``"gaussian"``.
        use_score: ``"auto"``: for an EDM denoiser (``precond``/``net``/``sigma_data``) take ``D - x`` from the
            preconditioning analytically (one JVP); else use ``denoiser.score`` (or the exact oracle's mixture
            score) for the FI/FIR when it exists. ``False``: plain JVP of ``D`` only.

    Returns:
        :class:`FisherCurves`. The same noise draw ``n`` is used at every sigma (common random numbers), which makes
        the curves and differences between them smooth in sigma.
    """
    x0 = torch.as_tensor(x0)
    if x0.ndim < 2:
        raise LatentgeoError(f"x0 has shape {tuple(x0.shape)}; pass a batch of samples [N, ...] (N >= 2)")
    check_nonempty(x0, "x0")
    if x0.shape[0] < 2:
        raise LatentgeoError("x0 holds one sample; pass at least 2 so that a standard error can be computed")
    check_finite(x0, "x0")
    if not x0.is_floating_point():
        x0 = x0.float()
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sig.numel() == 0 or not torch.isfinite(sig).all() or (sig <= 0).any():
        raise LatentgeoError("sigmas must be a non-empty list of positive finite noise levels; "
                             "pass e.g. latentgeo.fisher.default_sigmas() (0.01 ... 80)")
    if int(n_probes) < 1:
        raise LatentgeoError(f"n_probes must be >= 1, got {n_probes}; pass n_probes=1 or more")
    if probe_batching not in ("auto", "vmap", "stack"):
        raise LatentgeoError(f"unknown probe_batching '{probe_batching}'; choose auto, vmap or stack")
    if probe not in ("rademacher", "gaussian"):
        raise LatentgeoError(f"unknown probe '{probe}'; choose rademacher or gaussian")
    P = int(n_probes)
    dtype = dtype or x0.dtype
    x0 = x0.to(dtype)
    device = x0.device
    if isinstance(denoiser, torch.nn.Module):
        p = next(iter(denoiser.parameters()), None)
        if p is not None and p.dtype != dtype:
            denoiser = copy.deepcopy(denoiser).to(dtype)
        denoiser = denoiser.eval()
    edm = _edm_parts(denoiser) if use_score in ("auto", True) else None
    score = _score_fn(denoiser) if use_score in ("auto", True) and edm is None else None
    if use_score is True and score is None and edm is None:
        raise LatentgeoError("use_score=True but the denoiser has no .score(x, sigma); pass use_score='auto'")

    N = x0.shape[0]
    n = x0[0].numel()
    rows = int(batch_size or 4096)
    if rows < 1:
        raise LatentgeoError(f"batch_size must be >= 1, got {batch_size}; pass a positive batch size, or None for 4096")
    noise = torch.randn(x0.shape, generator=generator, dtype=dtype, device=_gen_device(generator, device)).to(device)
    red = tuple(range(1, x0.ndim))
    _check_denoiser_output(denoiser, x0[:2] + float(sig[0]) * noise[:2], float(sig[0]))
    eps = torch.finfo(dtype).eps

    batching = probe_batching
    out = {k: [] for k in _FIELDS}
    fim_ses: list = []
    unavailable: list = []
    for s in sig.tolist():
        tau = s * s
        fi_i = torch.zeros(N, dtype=torch.float64)
        fir_i = torch.zeros(N, dtype=torch.float64)
        mr_i = torch.zeros(N, dtype=torch.float64)
        mse_i = torch.zeros(N, dtype=torch.float64)
        fim_i = torch.zeros(N, dtype=torch.float64)  # (n tau - |D - x0|^2) / tau^2 per sample
        cv_i = torch.zeros(N, dtype=torch.float64)  # (|x - x0|^2 - n tau) / tau^2: zero mean, control variate
        rnd_i = torch.zeros(N, dtype=torch.float64)  # float round-off bound of that difference
        bad_out = False
        # chunks of whole samples; all P probes of a sample are evaluated together (vmap over the tangents shares
        # the primal computation between probes, ~2x cheaper than stacking probes into the batch)
        b = max(1, rows // P)
        for start in range(0, N, b):
            idx = torch.arange(start, min(start + b, N), device=device)
            xb = x0[idx] + s * noise[idx]
            sb = torch.full((xb.shape[0],), s, dtype=dtype, device=device)
            V = _probes((P,) + tuple(xb.shape), probe, generator, dtype, device)
            if edm is not None:
                g = edm  # -> (D, D - x)
            elif score is None:
                g = denoiser
            else:
                def g(y, sg):
                    return denoiser(y, sg), score(y, sg)
            prim, tang, batching = _probe_jvps(g, xb, sb, V, batching, key=denoiser)
            if edm is not None:
                Dx, rx = prim
                JDv, Jrv = tang
                Hv = Jrv / tau  # (J_D v - v) / sigma^2 from the analytic residual
                sx = rx / tau
            elif score is None:
                Dx, JDv = prim, tang
                # (J_D v - v) / sigma^2 = J_s v: divide before squaring so 1/sigma^4 is never formed alone
                Hv = (JDv - V) / tau
                sx = (Dx - xb) / tau
            else:
                (Dx, sx), (JDv, Hv) = prim, tang
            if Dx.shape != xb.shape or JDv.shape != V.shape:
                raise LatentgeoError(f"the denoiser returned shape {tuple(Dx.shape)} for input of shape "
                                     f"{tuple(xb.shape)}; it must return E[x0 | x] with the input's shape")
            bad_out = bad_out or not bool(torch.isfinite(Dx).all())
            Dx, sx, JDv, Hv = (t.to(torch.float64) for t in (Dx, sx, JDv, Hv))
            red_p = tuple(range(2, Hv.ndim))
            ic = idx.cpu()
            fir_i[ic] = -(Hv ** 2).sum(red_p).sum(0).cpu()
            mr_i[ic] = (JDv ** 2).sum(red_p).sum(0).cpu()
            fi_i[ic] = (sx ** 2).sum(red).cpu()
            x0b = x0[idx].to(torch.float64)
            err = Dx - x0b
            e2 = (err ** 2).sum(red)
            mse_i[ic] = e2.cpu()
            # MMSE identity per sample, and the applied noise energy (known mean n tau) for a control variate
            fim_i[ic] = (n * tau - e2).cpu() / tau ** 2
            cv_i[ic] = (((xb.to(torch.float64) - x0b) ** 2).sum(red) - n * tau).cpu() / tau ** 2
            # |D - x0|^2 moves by 2 |D - x0| |dD| when D carries relative rounding eps: bound the FI error by that
            rnd_i[ic] = (2 * eps * e2.sqrt() * (Dx ** 2).sum(red).sqrt()).cpu() / tau ** 2
        fir_i /= P  # Hutchinson: average over the probes of each sample
        mr_i /= P
        if bad_out:
            raise LatentgeoError(f"the denoiser returned NaN/inf at sigma = {s:.6g}; check it at that noise level "
                                 "(or drop that sigma from the grid)")
        for key, arr in (("fi", fi_i), ("fir", fir_i), ("mmse", mse_i), ("mmse_rate", mr_i)):
            if not bool(torch.isfinite(arr).all()):
                what = "its Jacobian-vector products are" if key in ("fir", "mmse_rate") else "its score is"
                raise LatentgeoError(f"the {key} estimate is not finite at sigma = {s:.6g}: the denoiser's output is "
                                     f"finite but {what} NaN/inf there; pass dtype=torch.float64 or check the "
                                     "denoiser at that noise level")
            m, se = _mean_se(arr)
            out[key].append(m)
            out[key + "_se"].append(se)
        fim, fim_se = _mean_se(_control_variate(fim_i, cv_i))
        rnd = float(rnd_i.mean())
        tol = FI_MMSE_REL_TOL * abs(out["fi"][-1])
        if not (math.isfinite(fim) and fim_se <= tol and rnd <= tol):
            unavailable.append(s)
            fim = float("nan")
        out["fi_mmse"].append(fim)
        fim_ses.append(fim_se)
        out["sigma"].append(s)
    res = {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
    meta = {"probe": probe, "dtype": str(dtype).replace("torch.", ""), "score_space_jvp": score is not None,
            "edm_residual_jvp": edm is not None, "probe_batching": batching, "fi_mmse_unavailable": unavailable,
            "jvp_mode": autodiff.forced_mode() or autodiff.ad_mode(denoiser)}
    if unavailable:
        meta["fi_mmse_note"] = (f"fi_mmse is NaN (unavailable) at sigma {', '.join(f'{v:.4g}' for v in unavailable)}:"
                                f" the MMSE identity (n tau - mmse)/tau^2 cancels catastrophically there (its "
                                f"standard error or {meta['dtype']} round-off exceeds {FI_MMSE_REL_TOL:.0%} of fi); "
                                "use fi")
    return FisherCurves(**res, n=n, n_samples=N, n_probes=P, label=label, meta=meta,
                        fi_mmse_se=torch.tensor(fim_ses, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FisherDeviation:
    """Relative deviation of latent-space curves from data-space curves, per sigma (all [S] float64).

    ``d_r = |R_data - R_latent| / |R_data|`` (raw FIR, no per-dimension normalisation), ``d_i`` the FI analogue,
    with first-order propagated standard errors.
    """

    sigma: torch.Tensor
    d_r: torch.Tensor
    d_i: torch.Tensor
    d_r_se: torch.Tensor
    d_i_se: torch.Tensor

    def to_dict(self) -> Dict[str, Any]:
        return {k: [float(v) for v in getattr(self, k)] for k in ("sigma", "d_r", "d_i", "d_r_se", "d_i_se")}


def _rel_dev(a, a_se, b, b_se):
    d = (a - b).abs() / a.abs()
    # delta method for |a - b| / |a| with independent a and b
    se = torch.sqrt((b / a ** 2) ** 2 * a_se ** 2 + b_se ** 2 / a ** 2)
    return d, se


def fir_deviation(data_curves: FisherCurves, latent_curves: FisherCurves) -> FisherDeviation:
    """``D_R = |R_data - R_latent| / |R_data|`` and ``D_I = |I_data - I_latent| / |I_data|`` at each sigma.

    Both curves must share the sigma grid (compute them with the same ``sigmas``).
    """
    a, b = data_curves, latent_curves
    if a.sigma.shape != b.sigma.shape or not torch.allclose(a.sigma, b.sigma, rtol=1e-9, atol=0):
        raise LatentgeoError("the two curves use different sigma grids; compute both with the same sigmas")
    d_r, d_r_se = _rel_dev(a.fir, a.fir_se, b.fir, b.fir_se)
    d_i, d_i_se = _rel_dev(a.fi, a.fi_se, b.fi, b.fi_se)
    return FisherDeviation(sigma=a.sigma.clone(), d_r=d_r, d_i=d_i, d_r_se=d_r_se, d_i_se=d_i_se)
