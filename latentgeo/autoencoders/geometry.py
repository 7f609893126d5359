"""Geometry metrics for ANY encoder: how well held-out pairwise distances survive the embedding.

Works with a latentgeo :class:`~latentgeo.autoencoders.nets.Encoder` (its raw map ``T``, the one the GME cost
trained), any ``torch.nn.Module`` or plain callable ``[B, ...] -> [B, ...]``, or a diffusers ``AutoencoderKL``
(its posterior mean ``encode(x).latent_dist.mean``). Latents are flattened.

For held-out pairs ``(i, j)`` with ``d_X = |x_i - x_j|`` and ``d_Z = |E x_i - E x_j|``:

- ``ratio = d_Z / d_X`` (quantiles); optionally after one global rescaling of ``Z`` (``rescale="median"``: by
  ``median(d_X / d_Z)``) so that encoders with arbitrary latent scale (VAE) can be compared;
- ``r = log(1 + d_Z^2) - log(1 + d_X^2)`` (the GME residual) and the (beta, eps) curve ``P(|r| <= log beta)``;
- eps-trimmed bi-Lipschitz constant ``q_{1-eps}(ratio) / q_eps(ratio)`` (1 for an isometry);
- Spearman rank correlation of ``d_X`` and ``d_Z``; k-NN overlap ``mean_i |N_k^X(i) ∩ N_k^Z(i)| / k``;
- Gromov-Wasserstein discrepancy (POT, ``ot.gromov.gromov_wasserstein2``, uniform weights, square loss) between
  the two distance matrices, each divided by its mean so the value is scale free (0 for an isometry).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from latentgeo.errors import LatentgeoError, check_finite

__all__ = ["as_encoder_fn", "embed", "geometry_report", "DEFAULT_BETAS"]

DEFAULT_BETAS = (1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


def as_encoder_fn(encoder: Any, raw: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn ``encoder`` into ``f(x [B, ...]) -> z [B, ...]`` (no grad, eval mode).

    latentgeo ``Encoder``: ``.raw`` (GME-trained ``T``) when ``raw`` else the normalised map. diffusers
    ``AutoencoderKL`` (anything whose ``encode`` output has ``latent_dist``): the posterior mean. Other modules
    and callables are used as they are; a tuple output takes its first element (e.g. ``(mean, logvar)``).
    """
    from latentgeo.autoencoders.nets import Encoder

    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    if isinstance(encoder, Encoder):
        return encoder.raw if raw else encoder
    if hasattr(encoder, "encode") and callable(encoder.encode):
        def f(x):
            out = encoder.encode(x)
            dist = getattr(out, "latent_dist", None)
            if dist is None and isinstance(out, (tuple, list)):
                dist = out[0]
            if dist is None or not hasattr(dist, "mean"):
                raise LatentgeoError("the encoder's encode() output has no latent_dist.mean; pass a callable "
                                     "that returns the latent mean instead")
            return dist.mean
        return f
    if not callable(encoder):
        raise LatentgeoError(f"encoder must be a module or a callable, got {type(encoder).__name__}; pass a "
                             "latentgeo Encoder, a diffusers AutoencoderKL or a function x -> z")

    def g(x):
        z = encoder(x)
        return z[0] if isinstance(z, (tuple, list)) else z
    return g


@torch.no_grad()
def embed(encoder: Any, x: torch.Tensor, batch_size: int = 256, raw: bool = True) -> torch.Tensor:
    """Flattened latents ``[N, d]`` of ``x`` ([N, ...]) in float64."""
    f = as_encoder_fn(encoder, raw=raw)
    p = next(encoder.parameters(), None) if isinstance(encoder, torch.nn.Module) else None
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        if p is not None:
            xb = xb.to(device=p.device, dtype=p.dtype)
        z = f(xb)
        if not isinstance(z, torch.Tensor):
            raise LatentgeoError(f"encoder returned a {type(z).__name__}, not a tensor; wrap it to return latents")
        outs.append(z.reshape(z.shape[0], -1).double().cpu())
    return torch.cat(outs, 0)


def _sq_dists(a: torch.Tensor) -> torch.Tensor:
    sq = a.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * a @ a.T).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    return d2


def geometry_report(encoder: Any, x: torch.Tensor, *, max_points: int = 1000, k: int = 10, eps: float = 0.05,
                    betas: Sequence[float] = DEFAULT_BETAS, rescale: str = "none", gw: bool = True,
                    gw_points: int = 400, seed: int = 0, raw: bool = True, z: Optional[torch.Tensor] = None,
                    return_pairs: bool = False) -> Dict[str, Any]:
    """Held-out geometry of ``encoder`` on ``x`` ([N, ...], data NOT used for training).

    Args:
        max_points: use at most this many points (a seeded random subset); all ``n(n-1)/2`` pairs are used.
        k: neighbours for the k-NN overlap. eps: trimming level for the bi-Lipschitz constant.
        betas: grid of beta > 1 for the curve ``P(|r| <= log beta)``.
        rescale: ``"none"`` (use latents as they are: the GME residual is scale dependent) or ``"median"``
            (multiply latents by ``median(d_X/d_Z)`` first; recorded as ``scale``).
        gw / gw_points: compute the Gromov-Wasserstein discrepancy on a subset of ``gw_points`` points.
        z: precomputed latents for ``x`` (then ``encoder`` may be None).
        return_pairs: also return ``"pairs": {"dx", "dz"}`` numpy arrays (for plots).
    Returns:
        dict with ``n_points, n_pairs, scale, gme, ratio_quantiles {q..}, trimmed_bilipschitz, eps,
        beta_curve [[beta, P(|r|<=log beta)], ...], spearman, knn_overlap, k, gw`` (plain floats).
    """
    from scipy.stats import spearmanr

    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim < 2 or x.shape[0] < 3:
        raise LatentgeoError(f"geometry needs held-out data of shape [N >= 3, ...], got {tuple(x.shape)}; "
                             "pass more samples")
    check_finite(x, "held-out data")
    if not 0 < eps < 0.5:
        raise LatentgeoError(f"eps must lie in (0, 0.5), got {eps}; e.g. 0.05 trims 5% of pairs at each end")
    if rescale not in ("none", "median"):
        raise LatentgeoError(f"unknown rescale '{rescale}'; choose one of: none, median")
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:max_points] if n > max_points else torch.arange(n)
    xs = x[idx]
    zs = embed(encoder, xs, raw=raw) if z is None else torch.as_tensor(z)[idx].reshape(len(idx), -1).double()
    if not torch.isfinite(zs).all():
        raise LatentgeoError("the encoder produced NaN/inf latents on the held-out data; check the model")
    xf = xs.reshape(len(idx), -1).double()
    m = len(idx)
    k = min(k, m - 1)
    iu = torch.triu_indices(m, m, 1)
    dx2, dz2 = _sq_dists(xf), _sq_dists(zs)
    dx, dz = dx2[iu[0], iu[1]].sqrt(), dz2[iu[0], iu[1]].sqrt()
    keep = dx > 0  # duplicate data points carry no ratio
    if not bool(keep.any()):
        raise LatentgeoError("all held-out points coincide; pass distinct samples")
    scale = 1.0
    if rescale == "median":
        pos = keep & (dz > 0)
        if not bool(pos.any()):
            raise LatentgeoError("the encoder maps all held-out points to one latent; it carries no geometry")
        scale = float((dx[pos] / dz[pos]).median())
        dz, dz2 = dz * scale, dz2 * scale ** 2
    ratio = (dz[keep] / dx[keep]).numpy()
    r = (torch.log1p(dz ** 2) - torch.log1p(dx ** 2)).numpy()
    qs = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
    qv = np.quantile(ratio, qs)
    lo, hi = np.quantile(ratio, [eps, 1 - eps])
    trimmed = float(hi / lo) if lo > 0 else math.inf
    # GME over all ordered pairs (diagonal included, as in the training cost): 2*sum_{i<j} / m^2
    gme = float(2.0 * (r ** 2).sum() / m ** 2)
    rho = float(spearmanr(dx.numpy(), dz.numpy()).statistic) if len(dx) > 2 else float("nan")
    # k-NN overlap (self excluded)
    big = torch.finfo(torch.float64).max
    nx = (dx2 + torch.eye(m, dtype=torch.float64) * big).topk(k, largest=False).indices
    nz = ((dz2 if rescale == "none" else _sq_dists(zs)) + torch.eye(m, dtype=torch.float64) * big).topk(
        k, largest=False).indices
    overlap = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(nx, nz)]))
    rep: Dict[str, Any] = {
        "n_points": m, "n_pairs": int(len(dx)), "scale": scale, "gme": gme,
        "ratio_quantiles": {f"q{int(round(q * 100)):02d}": float(v) for q, v in zip(qs, qv)},
        "trimmed_bilipschitz": trimmed, "eps": eps,
        "beta_curve": [[float(b), float(np.mean(np.abs(r) <= math.log(b)))] for b in betas],
        "spearman": rho, "knn_overlap": overlap, "k": k,
    }
    if gw:
        rep["gw"] = _gw(dx2, dz2 if rescale == "none" else _sq_dists(zs), gw_points)
    if return_pairs:
        rep["pairs"] = {"dx": dx.numpy(), "dz": dz.numpy()}
    return rep


def _gw(dx2: torch.Tensor, dz2: torch.Tensor, points: int) -> float:
    """Gromov-Wasserstein discrepancy between two metric spaces on the same points (mean-normalised distances)."""
    import ot

    m = min(points, dx2.shape[0])
    a = dx2[:m, :m].sqrt().numpy()
    b = dz2[:m, :m].sqrt().numpy()
    a = a / a.mean() if a.mean() > 0 else a
    b = b / b.mean() if b.mean() > 0 else b
    p = np.full(m, 1.0 / m)
    return float(ot.gromov.gromov_wasserstein2(a, b, p, p, loss_fun="square_loss"))
