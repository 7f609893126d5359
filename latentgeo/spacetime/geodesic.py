"""Spacetime geodesics: minimise the simulation-free Fisher-Rao energy over spline curves with Adam.

The curve is a straight line in (log-SNR ``lambda = -2 log sigma``, x) plus a C2 cubic spline that vanishes at both
endpoints (:class:`~latentgeo.spacetime.spline.SplineCurve`), initialised at zero. Each Adam step evaluates the
discretised energy ``(N-1)/2 sum (eta_{n+1}-eta_n).(mu_{n+1}-mu_n)`` at all N points in one batched call (a double
backward through the denoiser gives the gradient). Many endpoint pairs are optimised at once (batched geodesics).

The energy and its gradient for one step are :func:`latentgeo.spacetime.energy.energy_and_grad` (re-exported here);
``compile=`` fuses that step (:mod:`latentgeo.spacetime.fast`). Modules depend one way: family <- energy <- fast <-
geodesic.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from latentgeo.errors import LatentgeoError, check_finite
from latentgeo.spacetime.energy import Penalty, energy_and_grad, resolve_objective
from latentgeo.spacetime.family import _fmt_sigmas, _n_probes, lambda_of_sigma, mu, objective_terms, segment_components
from latentgeo.spacetime.fast import try_compiled_energy_step
from latentgeo.spacetime.spline import SplineCurve

__all__ = ["Geodesic", "geodesic", "energy_and_grad"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_AUTO = "auto"


def _resolve_eval_probes(eval_probes, n_probes, dim: int):
    """Probes for the final energy/length: ``"auto"`` = exact for dim <= 16 (cheap, deterministic), otherwise at
    least 16 Rademacher probes (one probe makes single-curve estimates noisy, even negative, in high dimension);
    ``"same"`` = ``n_probes``; else the value itself (``None`` = exact)."""
    if eval_probes == _AUTO:
        if n_probes is None or dim <= 16:
            return None
        return max(int(n_probes), 16)
    if eval_probes == "same":
        return n_probes
    return eval_probes


@dataclass
class Geodesic:
    """Result of :func:`geodesic`.

    Attributes (single geodesic; batched geodesics have a leading pair axis P everywhere):
        xs: [N, ...] points in data space.  sigmas: [N] noise levels.  lambdas: [N] log-SNR.
        energy: discretised energy of the final curve (float, or [P] tensor).  length: its length
            ``sum_n sqrt|d_n|`` (same).
        negative_fraction: ``sum_n max(-d_n, 0) / sum_n |d_n|`` on the final curve: 0 for a true posterior-mean
            denoiser with the exact divergence; large values flag probe noise or a denoiser that is not a valid
            posterior mean there (its Jacobian is not symmetric PSD), so lengths are then unreliable.
        history: per logged step, ``step``, ``energy`` (summed over pairs), ``penalty``, ``seconds``.
        nodes: final spline knot values [P, K, 1 + n] (warm-start another run with ``init_nodes=``).
        curve: the :class:`SplineCurve` (``curve.evaluate(n_points, nodes)`` re-samples the geodesic).
        compile_seconds: time spent tracing/compiling the fused step (``compile=``), excluded from
            ``seconds_per_step``.
        objective: the objective that was minimised (``"abs"``, ``"relu"`` or ``"signed"``).
        objective_value: its value ``(N-1)/2 sum_n objective_n`` on the final curve (float, or [P]); equals
            ``energy`` when no segment (``"abs"``) / no component (``"relu"``) is negative.
        negative_components: how many segment components ``c_nk`` (:func:`segment_components`) of the final curve
            are negative (int, or [P]); ``0`` means both objectives equal the energy there.
    """

    xs: torch.Tensor
    sigmas: torch.Tensor
    energy: Union[float, torch.Tensor]
    length: Union[float, torch.Tensor]
    history: Dict[str, List[float]] = field(default_factory=dict)
    nodes: Optional[torch.Tensor] = None
    curve: Optional[SplineCurve] = None
    batched: bool = False
    seconds_per_step: float = float("nan")
    negative_fraction: Union[float, torch.Tensor] = 0.0
    compile_seconds: float = 0.0
    objective: str = "abs"
    objective_value: Union[float, torch.Tensor] = float("nan")
    negative_components: Union[int, torch.Tensor] = 0

    @property
    def lambdas(self) -> torch.Tensor:
        return lambda_of_sigma(self.sigmas)

    def resample(self, n_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The optimised curve at ``n_points`` equispaced parameter values: (xs, sigmas)."""
        with torch.no_grad():
            xs, s = self.curve.evaluate(n_points, self.nodes)
        return (xs, s) if self.batched else (xs[0], s[0])


_HALF = (torch.float16, torch.bfloat16)


def _as_endpoint(pt, name: str, batched: Optional[bool]):
    if not (isinstance(pt, (tuple, list)) and len(pt) == 2):
        raise LatentgeoError(f"{name} must be a pair (x, sigma); got {type(pt).__name__}")
    x, s = pt
    x = torch.as_tensor(x)
    if x.is_complex():
        raise LatentgeoError(f"{name} x is complex ({x.dtype}); pass real float32 or float64 points")
    if not x.is_floating_point():
        x = x.double()
    if x.dtype in _HALF:
        raise LatentgeoError(f"{name} x is {str(x.dtype).replace('torch.', '')}: half precision cannot hold "
                             "eta = x / sigma^2 and the double backward of the geodesic energy (it overflows); pass "
                             "float32 or float64 points, e.g. x.float()")
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    return x, s


def _explain_nonfinite(denoiser: Denoiser, xs: torch.Tensor, sig: torch.Tensor, step: int, what: str,
                       chunk_size: Optional[int]) -> LatentgeoError:
    """Why the energy (or its gradient) became NaN/inf at ``step``: a one-line error naming the cause.

    Checks, in order, the curve's own points, the denoiser's output on them, and its divergence (one exact or
    Rademacher probe, no graph); if all are finite the energy itself overflowed (too large a step).
    """
    with torch.no_grad():
        xf, sf = xs.detach().reshape(-1, *xs.shape[2:]), sig.detach().reshape(-1)
        if not (bool(torch.isfinite(xf).all()) and bool(torch.isfinite(sf).all()) and bool((sf > 0).all())):
            return LatentgeoError(f"the geodesic's points left the finite range at step {step} (sigma or x became "
                                  "0, NaN or inf); lower lr or use more n_points")
        rows = xf.shape[0] if not chunk_size else int(chunk_size)
        for i in range(0, xf.shape[0], rows):
            D = denoiser(xf[i:i + rows], sf[i:i + rows])
            bad = ~torch.isfinite(D).reshape(D.shape[0], -1).all(1)
            if bool(bad.any()):
                return LatentgeoError(f"the denoiser returned NaN/inf at sigma = {_fmt_sigmas(sf[i:i + rows][bad])} "
                                      f"on the geodesic (step {step}); check it at that noise level or keep the curve "
                                      "away from it (e.g. a larger sigma_min)")
    try:
        for i in range(0, xf.shape[0], rows):
            mu(denoiser, xf[i:i + rows], sf[i:i + rows], n_probes=None if xf[0].numel() <= 16 else 1,
               create_graph=False)
    except LatentgeoError as exc:
        return LatentgeoError(f"{exc} (geodesic step {step})")
    if what == "gradient":
        return LatentgeoError(f"the geodesic energy's gradient became NaN/inf at step {step} (sigma on the curve "
                              f"from {float(sf.min()):.4g} to {float(sf.max()):.4g}) although the denoiser and its "
                              "divergence are finite; its second derivatives are not finite there: check the "
                              "denoiser's double backward, or raise sigma_min")
    return LatentgeoError(f"the geodesic energy became {what} at step {step}; lower lr, raise sigma_min or use more "
                          "n_points")


@contextlib.contextmanager
def _frozen(denoiser):
    """Parameters of a module denoiser stop requiring grad during the optimisation (only the knots' gradient is
    needed; the double backward then skips the weight branches) and are restored afterwards."""
    ps = [p for p in denoiser.parameters() if p.requires_grad] if isinstance(denoiser, torch.nn.Module) else []
    try:
        for p in ps:
            p.requires_grad_(False)
        yield
    finally:
        for p in ps:
            p.requires_grad_(True)


def geodesic(denoiser: Denoiser, start, end, n_points: int = 64, n_nodes: int = 8, steps: int = 500,
             lr: float = 0.1, n_probes: Optional[int] = 1, penalty: Optional[Penalty] = None,
             generator: Optional[torch.Generator] = None, progress: bool = False, *,
             chunk_size: Optional[int] = None, batched: Optional[bool] = None,
             init_nodes: Optional[torch.Tensor] = None, eval_probes: Union[int, None, str] = _AUTO,
             log_every: int = 1, callback: Optional[Callable[[int, float], None]] = None,
             robust: bool = True, compile: Union[bool, str] = False,
             objective: Optional[str] = None) -> Geodesic:
    """Spacetime geodesic between ``start = (x_a, sigma_a)`` and ``end = (x_b, sigma_b)``.

    Args:
        denoiser: ``D(x, sigma) -> E[x0|x]`` (x [B, ...], sigma [B]); rows must be processed independently.
        start, end: ``(x, sigma)``. One geodesic: x of the data shape [...] and sigma a float/0-d tensor.
            Batched geodesics: x [P, ...] and sigma [P] (or a float with ``batched=True``).
        n_points: N, points on the discretised curve (endpoints included).
        n_nodes: K, free interior knots of the spline offset.
        steps, lr: Adam iterations and learning rate (anchor: lr 0.1).
        n_probes: Rademacher probes per point for the divergence (shared along each curve, fresh every step);
            ``None`` for the exact divergence (small dimensions).
        penalty: optional ``penalty(xs, sigmas) -> scalar`` added to the energy (shapes as the result's xs/sigmas,
            i.e. [N, ...]/[N], or [P, N, ...]/[P, N] when batched). If it has ``set_step(step, steps)``, that is called
            before every step (weight ramps, see :mod:`latentgeo.spacetime.penalties`).
        generator: RNG for the probes.
        progress: show a progress bar.
        chunk_size: evaluate the denoiser on at most this many curve points at a time (bounded memory, same
            gradient); ``None`` = all at once.
        init_nodes: warm start, knot values [P, K, 1 + n] (e.g. ``previous.nodes`` with a different ``n_points``).
        eval_probes: probes for the final energy/length: ``"auto"`` (exact for data dimension <= 16, else
            max(n_probes, 16)), ``"same"`` (= n_probes), an integer, or ``None`` (exact).
        log_every: record history every this many steps.
        callback: ``callback(step, energy)`` after every step.
        objective: what the optimiser minimises, from the segment components ``c_nk`` (``d_n = sum_k c_nk``,
            :func:`~latentgeo.spacetime.family.segment_components`): ``"abs"`` (default) ``(N-1)/2 sum_n |d_n|``;
            ``"relu"`` ``(N-1)/2 sum_nk max(c_nk, 0)`` (every component clamped, the form of the authors' code);
            ``"signed"`` the energy ``(N-1)/2 sum_n d_n`` itself. For a true posterior mean every ``d_n >= 0``, so
            ``"abs"`` is the energy; single components can still be negative there, so ``"relu"`` is an upper
            bound of it. On trained denoisers whose Jacobians are not symmetric PSD the signed energy is unbounded
            below; ``"abs"`` counts a negative segment as distance, ``"relu"`` drops negative components. The
            result reports ``negative_fraction``, ``negative_components`` and ``objective_value``.
        robust: ``False`` is the older spelling of ``objective="signed"``.
        compile: fuse each optimisation step into compiled kernels (:mod:`latentgeo.spacetime.fast`; small
            dimensions, exact divergence ``n_probes=None``, no penalty, no chunking). ``True``/``"inductor"``
            (about 3-6x faster per step in 2-D; the first compile of an architecture/shape costs about a minute,
            later processes hit Inductor's disk cache; falls back to eager with a warning when no compiler works),
            ``"fx"`` (traced only, for checks) or ``False``. Same energy and gradient up to float reassociation.
    Returns:
        :class:`Geodesic` with ``xs``, ``sigmas``, ``energy``, ``length``, ``history``, ``nodes``.
    """
    xa, sa = _as_endpoint(start, "start", batched)
    xb, sb = _as_endpoint(end, "end", batched)
    xb, sb = xb.to(dtype=xa.dtype, device=xa.device), sb.to(dtype=xa.dtype, device=xa.device)
    if batched is None:
        batched = sa.ndim == 1 or sb.ndim == 1
    if batched:
        if xa.ndim < 1 or xa.shape != xb.shape:
            raise LatentgeoError(f"batched endpoints need x_a and x_b of the same shape [P, ...]; got "
                                 f"{tuple(xa.shape)} and {tuple(xb.shape)}")
        P = xa.shape[0]
        sa = sa.reshape(-1).expand(P) if sa.numel() == 1 else sa
        sb = sb.reshape(-1).expand(P) if sb.numel() == 1 else sb
        if sa.shape != (P,) or sb.shape != (P,):
            raise LatentgeoError(f"batched endpoints need sigma of shape [P] = [{P}] or a float; got "
                                 f"{tuple(sa.shape)} and {tuple(sb.shape)}")
    else:
        if xa.shape != xb.shape:
            raise LatentgeoError(f"x_a and x_b have different shapes {tuple(xa.shape)} and {tuple(xb.shape)}; "
                                 "pass points of the same data shape")
        if sa.numel() != 1 or sb.numel() != 1:
            raise LatentgeoError("for one geodesic sigma must be a float; for many pass x [P, ...], sigma [P]")
        xa, xb = xa.unsqueeze(0), xb.unsqueeze(0)
        sa, sb = sa.reshape(1), sb.reshape(1)
    for t, nm in ((xa, "x_a"), (xb, "x_b"), (sa, "sigma_a"), (sb, "sigma_b")):
        check_finite(t, nm)
    if (sa <= 0).any() or (sb <= 0).any():
        raise LatentgeoError("endpoint sigmas must be > 0 (the family degenerates at sigma = 0); use a small "
                             "sigma_min such as 0.01-0.1")
    if n_points < 2:
        raise LatentgeoError(f"n_points must be >= 2, got {n_points}; pass n_points=2 or more (both end points)")
    if steps < 0:
        raise LatentgeoError(f"steps must be >= 0, got {steps}; pass 0 (the initial curve) or more")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise LatentgeoError(f"lr must be a positive finite number, got {lr!r}; the anchor uses lr = 0.1")
    if int(log_every) < 1:
        raise LatentgeoError(f"log_every must be >= 1, got {log_every}; pass the number of steps between log lines")
    if chunk_size is not None and int(chunk_size) < 1:
        raise LatentgeoError(f"chunk_size must be >= 1 (or None for all points at once), got {chunk_size}; "
                             "pass a positive number of points, or None")
    n_probes = _n_probes(n_probes)
    objective = resolve_objective(objective, robust)
    if eval_probes not in (_AUTO, "same"):
        eval_probes = _n_probes(eval_probes)
    if init_nodes is not None:
        init_nodes = torch.as_tensor(init_nodes)
        want = (xa.shape[0], int(n_nodes), 1 + int(xa[0].numel()))
        if init_nodes.numel() != math.prod(want):
            raise LatentgeoError(f"init_nodes has shape {tuple(init_nodes.shape)} but this geodesic needs "
                                 f"[P, K, 1 + n] = {list(want)}; pass a previous result's .nodes with the same "
                                 "n_nodes and endpoints")
        check_finite(init_nodes, "init_nodes")

    curve = SplineCurve(xa, sa, xb, sb, n_nodes, nodes=init_nodes)
    fast_step = None
    t_compile = time.perf_counter()
    if compile:
        backend = "inductor" if compile is True else str(compile)
        if n_probes is not None or penalty is not None or (chunk_size and chunk_size < xa.shape[0] * n_points):
            raise LatentgeoError("compile=True needs the exact divergence (n_probes=None), no penalty and no "
                                 "chunking; drop compile or those options")
        if steps > 0:
            fast_step = try_compiled_energy_step(denoiser, curve, n_points, objective=objective, backend=backend)
    t_compile = time.perf_counter() - t_compile if fast_step is not None else 0.0
    opt = torch.optim.Adam([curve.nodes], lr=lr)
    history: Dict[str, List[float]] = {"step": [], "energy": [], "penalty": [], "seconds": []}
    iterator = range(steps)
    bar = None
    if progress and steps > 0:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("geodesic", total=steps)
    t0 = time.perf_counter()
    stack = contextlib.ExitStack()
    try:
        if fast_step is None:
            stack.enter_context(_frozen(denoiser))
        for step in iterator:
            if penalty is not None and hasattr(penalty, "set_step"):
                penalty.set_step(step, steps)
            if fast_step is not None:
                E, g = fast_step(curve.nodes)
                pen = 0.0
            else:
                xs, sig = curve.evaluate(n_points)
                E, pen, (g,) = energy_and_grad(denoiser, xs, sig, [curve.nodes], n_probes=n_probes,
                                               generator=generator, chunk_size=chunk_size, penalty=penalty,
                                               batched=batched, objective=objective)
            if g is None:
                g = torch.zeros_like(curve.nodes)
            if not bool(torch.isfinite(E).all() & torch.isfinite(g).all()) or not math.isfinite(pen):
                with torch.no_grad():
                    xs_bad, sig_bad = curve.evaluate(n_points)
                e = float(E.sum())
                what = str(e) if not math.isfinite(e) else "gradient" if math.isfinite(pen) else "penalty"
                if what == "penalty":
                    raise LatentgeoError(f"the geodesic penalty became {pen} at step {step}; check the penalty's "
                                         "weight and parameters")
                raise _explain_nonfinite(denoiser, xs_bad, sig_bad, step, what, chunk_size)
            curve.nodes.grad = g
            opt.step()
            if step % log_every == 0 or step == steps - 1:
                e = float(E.sum())
                history["step"].append(step)
                history["energy"].append(e)
                history["penalty"].append(pen)
                history["seconds"].append(time.perf_counter() - t0)
            if callback is not None:
                callback(step, float(E.sum()))
            if bar is not None:
                bar.update(task, advance=1)
    finally:
        stack.close()
        if bar is not None:
            bar.stop()
    sec = (time.perf_counter() - t0) / max(steps, 1)
    ep = _resolve_eval_probes(eval_probes, n_probes, int(xa[0].numel()))

    with torch.no_grad():
        xs, sig = curve.evaluate(n_points)
        # Guard: Adam normalises gradients, so nearly coincident endpoints (tiny but non-zero gradients) can walk
        # the curve away from the straight line it started on. Keep, per pair, whichever of the optimised curve and
        # the straight line has the lower final objective (evaluated together, with the same probes).
        zero = torch.zeros_like(curve.nodes)
        xs0, sig0 = curve.evaluate(n_points, nodes=zero)
    if steps > 0 and init_nodes is None and penalty is None:
        both = segment_components(denoiser, torch.cat([xs, xs0]), torch.cat([sig, sig0]), n_probes=ep,
                                  generator=generator, chunk_size=chunk_size).detach()
        comp, comp0 = both[: xs.shape[0]], both[xs.shape[0]:]
        keep_line = objective_terms(comp0, objective).sum(-1) < objective_terms(comp, objective).sum(-1)
        if bool(keep_line.any()):
            with torch.no_grad():
                curve.nodes[keep_line] = 0.0
                xs, sig = curve.evaluate(n_points)
            comp = torch.where(keep_line[:, None, None], comp0, comp)
    else:
        comp = segment_components(denoiser, xs, sig, n_probes=ep, generator=generator, chunk_size=chunk_size)
        comp = comp.detach()
    d = comp[..., :-1].sum(-1) + comp[..., -1]
    c = 0.5 * (n_points - 1)
    energy = c * d.sum(-1)
    length = d.abs().sqrt().sum(-1)
    neg = d.clamp(max=0).abs().sum(-1) / d.abs().sum(-1).clamp_min(1e-300)
    obj_val = c * objective_terms(comp, objective).sum(-1)
    n_neg = (comp < 0).flatten(1).sum(-1)
    nodes = curve.nodes.detach().clone()
    if not batched:
        return Geodesic(xs[0], sig[0], float(energy[0]), float(length[0]), history, nodes, curve, False, sec,
                        float(neg[0]), t_compile, objective, float(obj_val[0]), int(n_neg[0]))
    return Geodesic(xs, sig, energy, length, history, nodes, curve, True, sec, neg, t_compile, objective, obj_val,
                    n_neg)
