"""Diffusion Edit Distance (DiffED): the spacetime geodesic length between ``(a, sigma_min)`` and ``(b, sigma_min)``.

Distances blow up as sigma -> 0 (``eta = x / sigma^2``), so the endpoints sit at a small ``sigma_min``. With
``encode=True`` clean data are first carried to ``sigma_min`` along the probability-flow ODE
``dx/dsigma = (x - D(x, sigma)) / sigma`` (deterministic, so the encoding is a function of the data point).
The geodesic between the two noisy points typically rises to lower SNR (a noising edit) and comes back (a denoising
edit); its length is the distance.

:func:`edit_distance_matrix` computes all pairs of a set in batches of ``pair_batch`` geodesics, optionally
RESUMABLE: with ``out=PATH`` every finished batch is stored atomically in an ``.npz`` cache, and a later call with the
same inputs and settings continues where the previous one stopped (finished pairs are never recomputed).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from latentgeo.errors import LatentgeoError, check_finite, check_positive
from latentgeo.spacetime.geodesic import Geodesic, geodesic

__all__ = ["edit_distance", "edit_distance_pairs", "edit_distance_matrix", "read_matrix_cache", "pf_ode_path",
           "encode_to_sigma", "DEFAULT_WARM_PROFILE", "default_warm_profile", "warm_init"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pf_ode_path(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """Heun integration of the PF-ODE through the noise levels ``sigmas`` [S] (increasing or decreasing, all > 0).

    ``x`` [B, ...] is the state at ``sigmas[0]``. Returns all states [S, B, ...]. ``grad=True`` keeps the graph
    (differentiable decoder/encoder).
    """
    x = torch.as_tensor(x)
    sigmas = torch.as_tensor(sigmas, device=x.device)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise LatentgeoError("PF-ODE noise levels must be finite and > 0 (the ODE is singular at sigma = 0); "
                             "pass a positive sigma_min, e.g. 0.002")
    check_finite(x, "x")
    out = [x]
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        B = x.shape[0]
        for i in range(sigmas.shape[0] - 1):
            s0, s1 = sigmas[i], sigmas[i + 1]
            d0 = (x - denoiser(x, s0.expand(B))) / s0
            x1 = x + (s1 - s0) * d0
            d1 = (x1 - denoiser(x1, s1.expand(B))) / s1
            x = x + (s1 - s0) * 0.5 * (d0 + d1)
            if not bool(torch.isfinite(x).all()):
                raise LatentgeoError(f"the PF-ODE state became NaN/inf between sigma = {float(s0):.4g} and "
                                     f"{float(s1):.4g}: the denoiser returned NaN/inf there; check it at those noise "
                                     "levels")
            out.append(x)
    return torch.stack(out)


def _rho_grid(lo: float, hi: float, steps: int, dtype, device, rho: float = 7.0) -> torch.Tensor:
    """``steps + 1`` noise levels from ``lo`` up to ``hi``, EDM rho-spaced (dense at low noise)."""
    i = torch.linspace(0, 1, steps + 1, dtype=dtype, device=device)
    return (lo ** (1 / rho) + i * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho


def encode_to_sigma(denoiser: Denoiser, x0: torch.Tensor, sigma: float, steps: int = 32,
                    sigma_start: float = 0.002) -> torch.Tensor:
    """Carry clean data ``x0`` [B, ...] to noise level ``sigma`` along the PF-ODE (Heun, rho-spaced).

    ``x0`` is taken as the state at ``sigma_start`` (the ODE is singular at 0). Uses
    ``latentgeo.diffusion.pf_ode_encode`` when available, else the same scheme here.
    """
    x0 = torch.as_tensor(x0)
    check_finite(x0, "x0")
    if not (0 < sigma_start < sigma):
        raise LatentgeoError(f"need 0 < sigma_start ({sigma_start}) < sigma ({sigma}) to PF-ODE-encode; lower "
                             "sigma_start or raise sigma_min")
    try:
        from latentgeo.diffusion import pf_ode_encode
    except ImportError:  # the diffusion area is optional here
        pf_ode_encode = None
    if pf_ode_encode is not None:
        z = pf_ode_encode(denoiser, x0, float(sigma), steps=steps, sigma_min=float(sigma_start))
    else:
        grid = _rho_grid(float(sigma_start), float(sigma), steps, x0.dtype, x0.device)
        z = pf_ode_path(denoiser, x0, grid)[-1]
    if not bool(torch.isfinite(z).all()):
        raise LatentgeoError(f"PF-ODE encoding to sigma = {float(sigma):.4g} gave NaN/inf: the denoiser returned "
                             f"NaN/inf between sigma = {float(sigma_start):.4g} and {float(sigma):.4g}; check it there")
    return z


def _multires(denoiser, start, end, n_points, steps, **kw) -> Geodesic:
    """Geodesic with a coarse-to-fine schedule: ``n_points``/``steps`` may be sequences (warm starts)."""
    pts = list(n_points) if isinstance(n_points, (list, tuple)) else [int(n_points)]
    sts = list(steps) if isinstance(steps, (list, tuple)) else [int(steps)] * len(pts)
    if len(pts) != len(sts):
        raise LatentgeoError(f"n_points {pts} and steps {sts} must have the same length; e.g. (16, 64) and (150, 50)")
    res, nodes = None, kw.pop("init_nodes", None)
    for n, s in zip(pts, sts):
        res = geodesic(denoiser, start, end, n_points=n, steps=s, init_nodes=nodes, **kw)
        nodes = res.nodes
    return res


#: Log-SNR knot offsets of the DiffED warm start for 6 interior knots (per unit of ``log(1 + |a - b| / sigma_min)``),
#: as learnt by ``warm_start="auto"`` pilots on digits: the exact class mixture gave [-0.23, -0.49, -0.70, -0.70,
#: -0.51, -0.24], the trained EDM MLP [-0.22, -0.44, -0.59, -0.59, -0.43, -0.22]
#: (benchmarks/results/diffed_cost.json, diffed_semantics.json). Used when a pilot would cost more than it saves.
DEFAULT_WARM_PROFILE = (-0.23, -0.47, -0.64, -0.64, -0.47, -0.23)


def default_warm_profile(n_nodes: int) -> torch.Tensor:
    """:data:`DEFAULT_WARM_PROFILE` at ``n_nodes`` interior knots [n_nodes] (float64; linear interpolation over the
    knots' relative positions ``k / (n_nodes + 1)``, zero at the endpoints)."""
    if int(n_nodes) < 1:
        raise LatentgeoError(f"n_nodes must be >= 1, got {n_nodes}; pass n_nodes=1 or more")
    base = np.concatenate([[0.0], np.asarray(DEFAULT_WARM_PROFILE), [0.0]])
    t0 = np.linspace(0, 1, base.size)
    t = np.arange(1, int(n_nodes) + 1) / (int(n_nodes) + 1)
    return torch.as_tensor(np.interp(t, t0, base), dtype=torch.float64)


def warm_init(A: torch.Tensor, B: torch.Tensor, sigma_min: float, profile: torch.Tensor) -> torch.Tensor:
    """Warm-start knots [P, K, 1 + n] for the pairs ``A``, ``B`` [P, ...] (at ``sigma_min``) from a log-SNR
    ``profile`` [K]: knot offsets ``profile * log(1 + |a - b| / sigma_min)`` in log-SNR, 0 in x (see
    :func:`edit_distance_matrix`, ``warm_start``)."""
    profile = torch.as_tensor(profile, dtype=torch.float64).reshape(-1)
    init = torch.zeros(A.shape[0], profile.numel(), 1 + A[0].numel(), dtype=A.dtype, device=A.device)
    u = _warm_scale(A, B, sigma_min).to(dtype=A.dtype, device=A.device)
    init[:, :, 0] = u[:, None] * profile.to(dtype=A.dtype, device=A.device)[None]
    return init


def edit_distance_pairs(denoiser: Denoiser, A: torch.Tensor, B: torch.Tensor, sigma_min: float = 0.1,
                        encode: bool = False, n_points: Union[int, Sequence[int]] = 32, n_nodes: int = 8,
                        steps: Union[int, Sequence[int]] = 200, lr: float = 0.1, n_probes: Optional[int] = 1,
                        eval_probes: Union[int, None, str] = "auto", chunk_size: Optional[int] = None,
                        generator: Optional[torch.Generator] = None, encode_steps: int = 32,
                        encode_from: float = 0.002, progress: bool = False, return_geodesic: bool = False,
                        init_nodes: Optional[torch.Tensor] = None,
                        warm_start: Union[None, str, torch.Tensor] = None):
    """DiffED for P pairs at once: ``A``, ``B`` [P, ...] -> lengths [P] (batched geodesics).

    Args:
        sigma_min: noise level of the endpoints.
        encode: first PF-ODE-encode ``A`` and ``B`` (clean data) from ``encode_from`` to ``sigma_min``.
        n_points, steps: discretisation and Adam steps; sequences give a coarse-to-fine schedule (anchor for images:
            8 nodes, (16, 64) points), each stage warm-started from the previous one.
        init_nodes: warm start of the (first-stage) spline knots [P, K, 1 + n] (see
            :func:`latentgeo.spacetime.geodesic`); :func:`edit_distance_matrix` uses it for its ``warm_start``.
        warm_start: ``None``, ``"default"`` (:func:`default_warm_profile`) or a log-SNR profile [n_nodes]: start
            every pair from :func:`warm_init` instead of the straight line (not with ``init_nodes``). The length
            returned is then the smaller of the optimised one and the straight segment's (the guard
            :func:`latentgeo.spacetime.geodesic` applies to straight-line starts); the geodesic returned is the
            optimised one.
        Others as in :func:`latentgeo.spacetime.geodesic`.
    """
    check_positive(float(sigma_min), "sigma_min")
    A = torch.as_tensor(A)
    B = torch.as_tensor(B, dtype=A.dtype, device=A.device)
    if A.shape != B.shape or A.ndim < 2:
        raise LatentgeoError(f"A and B must both be [P, ...] with the same shape; got {tuple(A.shape)} and "
                             f"{tuple(B.shape)}")
    check_finite(A, "A")
    check_finite(B, "B")
    if encode:
        both = encode_to_sigma(denoiser, torch.cat([A, B]), sigma_min, steps=encode_steps, sigma_start=encode_from)
        A, B = both[: A.shape[0]], both[A.shape[0]:]
    if warm_start is not None:
        if init_nodes is not None:
            raise LatentgeoError("got both init_nodes and warm_start; pass one of them, not both")
        if isinstance(warm_start, str):
            if warm_start != "default":
                raise LatentgeoError(f"warm_start must be None, 'default' or a tensor of {n_nodes} log-SNR offsets; "
                                     f"got '{warm_start}'")
            warm_start = default_warm_profile(n_nodes)
        warm_start = torch.as_tensor(warm_start, dtype=torch.float64).reshape(-1)
        if warm_start.numel() != int(n_nodes):
            raise LatentgeoError(f"warm_start has {warm_start.numel()} values but n_nodes is {n_nodes}; pass one "
                                 "log-SNR offset per interior knot")
        init_nodes = warm_init(A, B, sigma_min, warm_start)
    s = torch.full((A.shape[0],), float(sigma_min), dtype=A.dtype, device=A.device)
    g = _multires(denoiser, (A, s), (B, s), n_points, steps, n_nodes=n_nodes, lr=lr, n_probes=n_probes,
                  generator=generator, progress=progress, chunk_size=chunk_size, batched=True,
                  eval_probes=eval_probes, init_nodes=init_nodes)
    L = g.length
    if warm_start is not None:  # a warm start skips geodesic()'s straight-line guard: apply it here
        kw = {"eval_probes": eval_probes, "n_probes": n_probes, "chunk_size": chunk_size}
        L0, _ = _straight(denoiser, A, B, sigma_min, n_points, kw, generator)
        L = torch.minimum(torch.as_tensor(L).detach(), L0.to(dtype=torch.as_tensor(L).dtype,
                                                              device=torch.as_tensor(L).device))
    return (L, g) if return_geodesic else L


def edit_distance(denoiser: Denoiser, a: torch.Tensor, b: torch.Tensor, sigma_min: float = 0.1,
                  encode: bool = False, return_geodesic: bool = False, **kwargs):
    """Diffusion Edit Distance between two data points ``a``, ``b`` (data shape [...]) -> float.

    The length of the spacetime geodesic between ``(a, sigma_min)`` and ``(b, sigma_min)``; with ``encode=True`` the
    clean points are first PF-ODE-encoded to ``sigma_min``. Keyword arguments as in :func:`edit_distance_pairs`.
    ``return_geodesic=True`` returns ``(distance, Geodesic)`` (the geodesic batched with P = 1).
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    if a.shape != b.shape:
        raise LatentgeoError(f"a and b have different shapes {tuple(a.shape)} and {tuple(b.shape)}; pass two points "
                             "of the same data shape")
    check_finite(a, "a")
    check_finite(b, "b")
    L, g = edit_distance_pairs(denoiser, a[None], b[None], sigma_min=sigma_min, encode=encode,
                               return_geodesic=True, **kwargs)
    return (float(L[0]), g) if return_geodesic else float(L[0])


_CACHE_FORMAT = "latentgeo-diffed-matrix-1"
# Settings that define the distances (part of the cache fingerprint). chunk_size / pair_batch / progress only change
# how the work is split, so a resume may change them.
_SETTING_KEYS = ("n_points", "n_nodes", "steps", "lr", "n_probes", "eval_probes", "encode_steps", "encode_from")
_DEFAULTS = dict(n_points=32, n_nodes=8, steps=200, lr=0.1, n_probes=1, eval_probes="auto", encode_steps=32,
                 encode_from=0.002)


def _hash_tensor(h, t: Optional[torch.Tensor]) -> None:
    if t is None:
        h.update(b"none")
        return
    a = t.detach().to("cpu", torch.float64).contiguous().numpy()
    h.update(str(tuple(a.shape)).encode())
    h.update(a.tobytes())


def _model_hash(denoiser) -> Optional[str]:
    """Hash of an ``nn.Module`` denoiser's parameters and buffers (``None`` for plain callables: not checkable)."""
    if not isinstance(denoiser, torch.nn.Module):
        mix = getattr(denoiser, "mixture", None)  # GaussianMixture.as_denoiser()
        if mix is None:
            return None
        h = hashlib.sha256(b"mixture")
        for t in (mix.weights, mix.means, mix.covs):
            _hash_tensor(h, t)
        return h.hexdigest()[:16]
    h = hashlib.sha256(type(denoiser).__name__.encode())
    for k, v in denoiser.state_dict().items():
        h.update(k.encode())
        _hash_tensor(h, v if v.is_floating_point() else v.double())
    return h.hexdigest()[:16]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return repr(v)
    return repr(v)


def read_matrix_cache(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Read an :func:`edit_distance_matrix` cache: ``(D [M, K] float64, done [M, K] bool, meta dict)``.

    ``D`` holds the finished distances (NaN where not yet computed); ``meta`` holds the fingerprint, the settings,
    ``negative_fraction`` ([M, K] list, NaN where not computed) is in the arrays as ``"neg"`` and returned in meta.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            D, done, neg = z["D"], z["done"].astype(bool), z["neg"]
            meta = json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise LatentgeoError(f"DiffED matrix cache '{path}' does not exist; pass the out= file of an "
                             "edit_distance_matrix run") from None
    except Exception as exc:  # truncated / not an npz / missing keys
        raise LatentgeoError(f"'{path}' is not a readable DiffED matrix cache ({type(exc).__name__}: {exc}); delete "
                             "it or pass resume=False to overwrite it") from exc
    if meta.get("format") != _CACHE_FORMAT or D.shape != done.shape:
        raise LatentgeoError(f"'{path}' is not a DiffED matrix cache of format {_CACHE_FORMAT}; delete it or pass "
                             "resume=False to overwrite it")
    meta["negative_fraction"] = neg
    return D, done, meta


def _write_cache(path: Path, D: np.ndarray, done: np.ndarray, neg: np.ndarray, meta: Dict[str, Any]) -> None:
    from latentgeo.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, D=D, done=done, neg=neg, meta=np.array(json.dumps(meta, sort_keys=True)))
    atomic_write_bytes(path, buf.getvalue())


def _warm_scale(A: torch.Tensor, B: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """Per-pair size of the warm-start bump: ``log(1 + |a - b| / sigma_min)`` ([P], float64 on the CPU).

    For a Gaussian the DiffED geodesic peaks near ``sigma ~ |a - b|``, i.e. a log-SNR dip of about
    ``2 log(|a - b| / sigma_min)``; this is 0 for identical points and grows like that for distant ones.
    """
    d = (A - B).reshape(A.shape[0], -1).norm(dim=1).detach().to("cpu", torch.float64)
    return torch.log1p(d / float(sigma_min))


def _straight(denoiser, A, B, sigma_min, n_points, kwargs, generator):
    """Lengths and negative fractions [P] (CPU, float64) of the straight segments at ``sigma_min`` between rows."""
    from latentgeo.spacetime.family import segment_terms
    from latentgeo.spacetime.geodesic import _resolve_eval_probes

    N = int(list(n_points)[-1] if isinstance(n_points, (list, tuple)) else n_points)
    ep = _resolve_eval_probes(kwargs.get("eval_probes", _DEFAULTS["eval_probes"]),
                              kwargs.get("n_probes", _DEFAULTS["n_probes"]), int(A[0].numel()))
    t = torch.linspace(0, 1, N, dtype=A.dtype, device=A.device).reshape(1, N, *([1] * (A.ndim - 1)))
    xs = (1 - t) * A[:, None] + t * B[:, None]
    sig = torch.full((A.shape[0], N), float(sigma_min), dtype=A.dtype, device=A.device)
    d = segment_terms(denoiser, xs, sig, n_probes=ep, generator=generator,
                      chunk_size=kwargs.get("chunk_size")).detach().to("cpu", torch.float64)
    neg = d.clamp(max=0).abs().sum(-1) / d.abs().sum(-1).clamp_min(1e-300)
    return d.abs().sqrt().sum(-1), neg


def edit_distance_matrix(denoiser: Denoiser, X: torch.Tensor, Y: Optional[torch.Tensor] = None,
                         sigma_min: float = 0.1, encode: bool = False, pair_batch: int = 64, *,
                         out: Union[str, os.PathLike, None] = None, resume: bool = True,
                         progress: Union[bool, Callable[[int, int], Any], None] = None, seed: Optional[int] = None,
                         max_points: Optional[int] = None, warm_start: Union[None, str, torch.Tensor] = None,
                         pilot_pairs: int = 16, pilot_steps: int = 150, return_info: bool = False, **kwargs):
    """DiffED between all rows of ``X`` [M, ...] and ``Y`` [K, ...] -> [M, K] (batched, chunked, resumable).

    With ``Y=None`` the matrix of ``X`` against itself: only pairs i < j are optimised (zero diagonal, mirrored),
    since the distance is symmetric. ``encode=True`` PF-ODE-encodes every point once. Keyword arguments
    (``n_points``, ``steps``, ``n_nodes``, ``lr``, ``n_probes``, ``eval_probes``, ``encode_steps``, ``encode_from``,
    ``chunk_size``, ``generator``) as in :func:`edit_distance_pairs`. The matrix is on ``X``'s device.

    Scale and memory:
        pair_batch: geodesics optimised together (one batched Adam run per batch of pairs, in row-major pair order).
        max_points (alias of ``chunk_size``): at most this many curve points per denoiser call, which bounds the
            memory of a step (about ``min(max_points, pair_batch * n_points)`` denoiser rows with their double
            backward graph) without changing the result. ``None`` = a whole batch at once.
    Resuming:
        out: path of an ``.npz`` cache. After every finished batch the distances found so far are written there
            atomically (:func:`latentgeo.checkpoint.atomic_write_bytes`), so an interruption loses at most the batch
            in flight. Read it with :func:`read_matrix_cache`.
        resume: if ``out`` exists and was written for the same data, model (parameters of an ``nn.Module``, or a
            ``GaussianMixture`` denoiser; a plain callable cannot be checked) and distance settings, only the
            unfinished pairs are computed; a cache for different inputs raises :class:`LatentgeoError`.
            ``resume=False`` starts afresh and overwrites ``out``.
        seed: base seed of the Hutchinson probes; batch ``b`` uses ``seed + (index of its first pair)``, so a resumed
            matrix is identical to an uninterrupted one (same ``pair_batch``). Default: drawn from ``generator``
            (when given) or from torch's global RNG, and stored in the cache (a resume reuses it).
    Speed:
        warm_start: ``None`` (every geodesic starts from the straight line), ``"auto"``, ``"default"``
            (:func:`default_warm_profile`, no pilot: for small matrices) or a tensor [n_nodes]. The
            DiffED geodesics of one data set and model share their shape in the noise direction (they rise to
            lower SNR in the middle and come back), so starting every pair from a common log-SNR profile instead of
            the straight line cuts the Adam steps needed several-fold (on digits, 20 warm steps come within ~4% of a
            300-step cold optimisation, 20 cold steps within ~35%). A pair at distance ``|a - b|`` (after encoding)
            starts with log-SNR knot offsets ``profile * log(1 + |a - b| / sigma_min)`` (no bump for identical
            points, a deeper one for distant points) and x offsets 0. ``"auto"`` learns the per-knot ``profile``
            once: a pilot of ``pilot_pairs`` pairs (spread over the matrix) is optimised cold for ``pilot_steps``
            steps at the first ``n_points`` stage and ``profile`` is the least-squares fit of their optimised
            offsets (kept in the cache, so a resume reuses it). A tensor [n_nodes] gives ``profile`` directly (e.g.
            ``info["warm_profile"]`` of an earlier run). Identical pairs are 0 without an optimisation.
    Progress:
        progress: ``True`` for a progress bar over pairs, or a callable ``progress(done, total)`` called after every
            finished (and saved) batch with the number of finished pairs; an exception it raises stops the matrix
            (what is saved stays saved).
    Returns:
        the [M, K] tensor; with ``return_info=True`` also a dict with ``negative_fraction`` [M, K] (per pair, see
        :class:`~latentgeo.spacetime.Geodesic`), ``computed`` (pairs optimised by this call), ``resumed`` (pairs
        taken from the cache), ``total``, ``seconds``, ``seed`` and ``warm_profile`` (the log-SNR knot profile used,
        or ``None``).
    """
    X = torch.as_tensor(X)
    if X.ndim < 2:
        raise LatentgeoError(f"X has shape {tuple(X.shape)}; pass one data point per row, [M, ...] (e.g. X[:, None] "
                             "for 1-D data)")
    if not X.is_floating_point():
        X = X.double()
    check_finite(X, "X")
    if Y is not None:
        Y = torch.as_tensor(Y, dtype=X.dtype, device=X.device)
        if Y.ndim != X.ndim or Y.shape[1:] != X.shape[1:]:
            raise LatentgeoError(f"X has shape {tuple(X.shape)} and Y {tuple(Y.shape)}; their points (all but the "
                                 "first axis) must have the same shape")
        check_finite(Y, "Y")
    check_positive(float(sigma_min), "sigma_min")
    if int(pair_batch) < 1:
        raise LatentgeoError(f"pair_batch must be >= 1, got {pair_batch}; pass e.g. pair_batch=64 (the default)")
    pair_batch = int(pair_batch)
    if max_points is not None:
        if kwargs.get("chunk_size") not in (None, max_points):
            raise LatentgeoError("max_points is an alias of chunk_size; pass only one of them")
        if int(max_points) < 1:
            raise LatentgeoError(f"max_points must be >= 1 (or None), got {max_points}; pass a positive number of "
                                 "points per chunk, or None for all at once")
        kwargs["chunk_size"] = int(max_points)
    if kwargs.get("progress") not in (None, False) and not isinstance(kwargs.get("progress"), bool):
        raise LatentgeoError("a per-geodesic progress= is not supported here; pass a progress callback as progress= "
                             "of edit_distance_matrix")
    kwargs.pop("return_geodesic", None)
    generator = kwargs.pop("generator", None)
    enc_steps = kwargs.pop("encode_steps", _DEFAULTS["encode_steps"])
    enc_from = kwargs.pop("encode_from", _DEFAULTS["encode_from"])
    sym = Y is None
    M, K = X.shape[0], (X.shape[0] if sym else Y.shape[0])
    dev = X.device
    if sym:
        idx = torch.triu_indices(M, M, offset=1)
    else:
        ii, jj = torch.meshgrid(torch.arange(M), torch.arange(K), indexing="ij")
        idx = torch.stack([ii.reshape(-1), jj.reshape(-1)])
    total = int(idx.shape[1])

    settings = {k: _jsonable(kwargs.get(k, _DEFAULTS.get(k))) for k in _SETTING_KEYS if k not in
                ("encode_steps", "encode_from")}
    settings.update(sigma_min=repr(float(sigma_min)), encode=bool(encode), dtype=str(X.dtype).replace("torch.", ""))
    if encode:
        settings.update(encode_steps=int(enc_steps), encode_from=repr(float(enc_from)))
    n_nodes = int(kwargs.get("n_nodes", _DEFAULTS["n_nodes"]))
    profile = None
    if isinstance(warm_start, str) and warm_start == "default":
        warm_start = default_warm_profile(n_nodes)
    if isinstance(warm_start, str):
        if warm_start != "auto":
            raise LatentgeoError(f"warm_start must be None, 'auto', 'default' or a tensor of {n_nodes} log-SNR "
                                 f"offsets; got '{warm_start}'")
        if int(pilot_pairs) < 1 or int(pilot_steps) < 1:
            raise LatentgeoError(f"warm_start='auto' needs pilot_pairs >= 1 and pilot_steps >= 1, got {pilot_pairs} "
                                 f"and {pilot_steps}; pass e.g. pilot_pairs=16, pilot_steps=150 (the defaults)")
        settings["warm_start"] = ["auto", int(pilot_pairs), int(pilot_steps)]
    elif warm_start is not None:
        profile = torch.as_tensor(warm_start, dtype=torch.float64).reshape(-1).cpu()
        if profile.numel() != n_nodes:
            raise LatentgeoError(f"warm_start has {profile.numel()} values but n_nodes is {n_nodes}; pass one "
                                 "log-SNR offset per interior knot")
        check_finite(profile, "warm_start")
        settings["warm_start"] = [repr(float(v)) for v in profile]
    extra = sorted(k for k in kwargs if k not in _SETTING_KEYS + ("chunk_size", "progress"))
    for k in extra:  # anything else that reaches the geodesic also defines the result
        settings[k] = _jsonable(kwargs[k])
    hd = hashlib.sha256()
    _hash_tensor(hd, X)
    _hash_tensor(hd, None if sym else Y)
    fp = {"data": hd.hexdigest()[:16], "model": _model_hash(denoiser),
          "settings": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16],
          "shape": [M, K], "symmetric": sym}

    D = np.full((M, K), np.nan)
    neg = np.full((M, K), np.nan)
    done = np.zeros((M, K), dtype=bool)
    base_seed = None if seed is None else int(seed)
    path = Path(out) if out is not None else None
    if path is not None and path.is_dir():
        raise LatentgeoError(f"out='{path}' is a folder; pass a file path such as '{path / 'diffed_matrix.npz'}'")
    if path is not None and resume and path.exists():
        D0, done0, meta0 = read_matrix_cache(path)
        old = meta0.get("fingerprint", {})
        for key, what in (("shape", "matrix shape"), ("symmetric", "kind (X vs itself, or X vs Y)"),
                          ("data", "data points"), ("settings", "distance settings"), ("model", "model")):
            if key == "model" and (old.get(key) is None or fp[key] is None):
                continue  # a plain callable has no fingerprint: it cannot be checked
            if old.get(key) != fp[key]:
                raise LatentgeoError(f"the DiffED cache '{path}' was written for different {what}; pass the same "
                                     "inputs to resume, resume=False to overwrite it, or another out= path")
        D, done, neg = D0, done0, np.asarray(meta0["negative_fraction"], dtype=float)
        if fp["model"] is None:  # keep the fingerprint of the model that started the matrix
            fp["model"] = old.get("model")
        if warm_start is not None and meta0.get("warm_profile") is not None:
            profile = torch.tensor(meta0["warm_profile"], dtype=torch.float64)
        if seed is None or int(seed) == int(meta0["seed"]):
            base_seed = int(meta0["seed"])
        else:
            raise LatentgeoError(f"the DiffED cache '{path}' was computed with seed {meta0['seed']}, not {seed}; "
                                 "pass the same seed (or none) to resume, or resume=False")
    if base_seed is None:
        base_seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    meta = {"format": _CACHE_FORMAT, "fingerprint": fp, "settings": settings, "seed": base_seed,
            "pair_batch": pair_batch, "warm_profile": None if profile is None else profile.tolist()}

    ii_np, jj_np = idx[0].numpy(), idx[1].numpy()
    todo = np.flatnonzero(~done[ii_np, jj_np])
    n_resumed = total - int(todo.size)
    t0 = time.perf_counter()
    computed = 0
    if todo.size and path is not None:
        _write_cache(path, D, done, neg, meta)  # claim the path early (a bad path fails before any work)
    bar = task = None
    if progress is True and todo.size:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("DiffED pairs", total=total, completed=n_resumed)
    try:
        if todo.size:
            Xe, Ye = X, Y
            pilot = warm_start is not None and profile is None
            if encode:  # encode only the points that still appear in an unfinished pair (all of them for a pilot)
                need_i = np.unique(ii_np[todo]) if not pilot else np.arange(M)
                need_j = np.unique(jj_np[todo]) if not pilot else np.arange(K)
                if sym:
                    need = np.union1d(need_i, need_j)
                    Xe = X.clone()
                    Xe[need] = encode_to_sigma(denoiser, X[need], sigma_min, steps=enc_steps, sigma_start=enc_from)
                    Ye = Xe
                else:
                    Xe, Ye = X.clone(), Y.clone()
                    Xe[need_i] = encode_to_sigma(denoiser, X[need_i], sigma_min, steps=enc_steps,
                                                 sigma_start=enc_from)
                    Ye[need_j] = encode_to_sigma(denoiser, Y[need_j], sigma_min, steps=enc_steps,
                                                 sigma_start=enc_from)
            elif sym:
                Ye = X
            pts = kwargs.get("n_points", _DEFAULTS["n_points"])
            if pilot:  # learn the warm-start profile on pairs spread over the whole matrix
                sel = np.unique(np.linspace(0, total - 1, min(int(pilot_pairs), total)).round().astype(np.int64))
                i = torch.as_tensor(ii_np[sel], device=dev)
                j = torch.as_tensor(jj_np[sel], device=dev)
                keep = ~(Xe[i] == Ye[j]).reshape(len(sel), -1).all(1)
                pkw = {k: v for k, v in kwargs.items() if k not in ("n_points", "steps")}
                if bool(keep.any()):
                    g = torch.Generator(device=dev).manual_seed((base_seed - 1) % (2 ** 63))
                    _, geo = edit_distance_pairs(denoiser, Xe[i[keep]], Ye[j[keep]], sigma_min=sigma_min,
                                                 encode=False, generator=g, return_geodesic=True,
                                                 n_points=list(pts)[0] if isinstance(pts, (list, tuple)) else pts,
                                                 steps=int(pilot_steps), **pkw)
                    lam = geo.nodes[:, :, 0].detach().to("cpu", torch.float64)  # [P, K]
                    u = _warm_scale(Xe[i[keep]], Ye[j[keep]], sigma_min)  # [P]
                    profile = (lam * u[:, None]).sum(0) / (u * u).sum().clamp_min(1e-300)  # least squares
                else:
                    profile = torch.zeros(n_nodes, dtype=torch.float64)
                meta["warm_profile"] = profile.tolist()
                if path is not None:
                    _write_cache(path, D, done, neg, meta)
            # Batches are consecutive runs of unfinished pairs; with an unchanged pair_batch they coincide with the
            # batches of an uninterrupted run (a run only ever finishes whole batches, in order).
            for s in range(0, todo.size, pair_batch):
                sel = todo[s:s + pair_batch]
                i = torch.as_tensor(ii_np[sel], device=dev)
                j = torch.as_tensor(jj_np[sel], device=dev)
                g = torch.Generator(device=dev).manual_seed((base_seed + int(sel[0])) % (2 ** 63))
                same = (Xe[i] == Ye[j]).reshape(len(sel), -1).all(1).cpu().numpy()
                Ln, nf = np.zeros(len(sel)), np.zeros(len(sel))
                if not same.all():
                    live = torch.as_tensor(np.flatnonzero(~same), device=dev)
                    init = None
                    if profile is not None:
                        init = torch.zeros(len(live), n_nodes, 1 + Xe[0].numel(), dtype=Xe.dtype, device=dev)
                        u = _warm_scale(Xe[i[live]], Ye[j[live]], sigma_min).to(dtype=Xe.dtype, device=dev)
                        init[:, :, 0] = u[:, None] * profile.to(dtype=Xe.dtype, device=dev)[None]
                    L, geo = edit_distance_pairs(denoiser, Xe[i[live]], Ye[j[live]], sigma_min=sigma_min,
                                                 encode=False, generator=g, return_geodesic=True, init_nodes=init,
                                                 **kwargs)
                    L = L.detach().to("cpu", torch.float64)
                    nfl = torch.as_tensor(geo.negative_fraction).detach().to("cpu", torch.float64).reshape(-1)
                    if init is not None:  # a warm start skips geodesic()'s straight-line guard: apply it here
                        L0, n0 = _straight(denoiser, Xe[i[live]], Ye[j[live]], sigma_min, pts, kwargs, g)
                        better = L0 < L
                        L, nfl = torch.where(better, L0, L), torch.where(better, n0, nfl)
                    Ln[~same], nf[~same] = L.numpy(), nfl.numpy()
                ic, jc = ii_np[sel], jj_np[sel]
                D[ic, jc], neg[ic, jc], done[ic, jc] = Ln, nf, True
                computed += int(sel.size)
                if path is not None:
                    _write_cache(path, D, done, neg, meta)
                if bar is not None:
                    bar.update(task, advance=int(sel.size))
                if callable(progress):
                    progress(n_resumed + computed, total)
    finally:
        if bar is not None:
            bar.stop()
    Dm = np.where(done, D, 0.0)
    nm = np.where(done, neg, 0.0)
    if sym:
        Dm = np.triu(Dm, 1) + np.triu(Dm, 1).T
        nm = np.triu(nm, 1) + np.triu(nm, 1).T
    res = torch.as_tensor(Dm, device=dev).to(X.dtype)
    if not return_info:
        return res
    return res, {"negative_fraction": torch.as_tensor(nm), "computed": computed, "resumed": n_resumed,
                 "total": total, "seconds": time.perf_counter() - t0, "seed": base_seed,
                 "warm_profile": None if profile is None else profile.clone()}
