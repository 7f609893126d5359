"""Losses of the geometry-preserving encoder (GPE) and of the joint baselines (REFERENCE.md section 1).

All losses take batches of any shape ``[B, ...]``; samples are flattened to vectors before distances are formed.
Distances are plain Euclidean (no division by the dimension) unless stated.
"""
from __future__ import annotations

from typing import Optional

import torch

from latentgeo.errors import LatentgeoError

__all__ = ["gme_loss", "pairwise_sq_dists", "mds_stress", "kl_per_dim", "gather_with_grad"]


def _flat(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise LatentgeoError(f"{name} must be a torch tensor of shape [B, ...], got {type(t).__name__}; convert it")
    if t.ndim == 0:
        raise LatentgeoError(f"{name} is a scalar; pass a batch of shape [B, ...]")
    return t.reshape(t.shape[0], -1)


def pairwise_sq_dists(a: torch.Tensor, exact: Optional[bool] = None) -> torch.Tensor:
    """Squared Euclidean distances ``|a_i - a_j|^2`` of the rows of ``a`` ([B, n]) -> [B, B].

    ``exact=True`` forms the explicit differences (O(B^2 n) memory, exact zeros on the diagonal, smooth gradients:
    no square root is ever taken, so there is no NaN gradient at zero distance). ``exact=False`` uses the Gram form
    in float64 (cheap, used for the data side where no gradient flows), clamped at 0 with an exact zero diagonal.
    Default: exact when ``B*B*n <= 4e6``.
    """
    b, n = a.shape
    if exact is None:
        exact = b * b * n <= 4_000_000
    if exact:
        diff = a[:, None, :] - a[None, :, :]
        return diff.pow(2).sum(-1)
    a64 = a.double()
    sq = a64.pow(2).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * a64 @ a64.T).clamp_min(0.0)
    d2 = d2 - torch.diag_embed(torch.diagonal(d2))  # exact zeros on the diagonal
    return d2.to(a.dtype)


def gather_with_grad(t: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate ``t`` ([b, ...], same ``b`` on every rank) over the ranks of ``group``, keeping gradients.

    Returns ``t`` unchanged when torch.distributed is not initialised. The backward of the differentiable
    all-gather sums the gradients of every rank's copy into the owning rank, so a loss that every rank computes
    on the GLOBAL batch, followed by DDP's gradient averaging, yields exactly the gradient of the global loss.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t
    if dist.get_world_size(group) == 1:
        return t
    if t.requires_grad:
        import warnings

        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
            warnings.simplefilter("ignore", FutureWarning)
            parts = all_gather(t.contiguous(), group=group)
    else:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(list(parts), 0)


def gme_loss(z: torch.Tensor, x: torch.Tensor, group=None, gather: bool = True,
             return_residuals: bool = False):
    """Gromov-Monge embedding cost over all ordered pairs of a minibatch.

    ``L = 1/B^2 sum_ij (log(1 + |z_i - z_j|^2) - log(1 + |x_i - x_j|^2))^2``  (diagonal terms are 0).

    Args:
        z: embeddings ``[B, ...]`` (flattened to ``[B, d]``), with gradients.
        x: the data ``[B, ...]`` (flattened to ``[B, D]``); no gradient is taken through it.
        group: process group; when torch.distributed is initialised (and ``gather``), ``z`` and ``x`` are gathered
            over the group (``z`` with its gradient) so that the pairs span the global batch.
        return_residuals: also return the ``[B, B]`` log-ratio residual matrix ``r_ij``.
    Returns:
        scalar loss (dimensionless), and optionally ``r``.
    """
    zf, xf = _flat(z, "z"), _flat(x, "x")
    if zf.shape[0] != xf.shape[0]:
        raise LatentgeoError(f"z has {zf.shape[0]} samples but x has {xf.shape[0]}; pass matching batches")
    if gather:
        zf = gather_with_grad(zf, group)
        xf = gather_with_grad(xf.detach(), group)
    dz = torch.log1p(pairwise_sq_dists(zf, exact=True))
    with torch.no_grad():
        dx = torch.log1p(pairwise_sq_dists(xf.to(zf.dtype)))
    r = dz - dx
    loss = r.pow(2).mean()
    return (loss, r) if return_residuals else loss


def mds_stress(mu: torch.Tensor, x: torch.Tensor, group=None, gather: bool = True) -> torch.Tensor:
    """MDS stress ``mean_{i != j} (|mu_i - mu_j|/sqrt(d) - |x_i - x_j|/sqrt(D))^2`` (REFERENCE.md section 1).

    The square root is taken only off the diagonal (and of values clamped away from 0), so gradients stay finite
    for coincident points.
    """
    mf, xf = _flat(mu, "mu"), _flat(x, "x")
    if gather:
        mf = gather_with_grad(mf, group)
        xf = gather_with_grad(xf.detach(), group)
    b, d = mf.shape
    big_d = xf.shape[1]
    if b < 2:
        raise LatentgeoError("mds_stress needs at least 2 samples per batch; increase the batch size")
    off = ~torch.eye(b, dtype=torch.bool, device=mf.device)
    dm2 = pairwise_sq_dists(mf, exact=True)[off]
    with torch.no_grad():
        dx = pairwise_sq_dists(xf.to(mf.dtype))[off].sqrt()
    dm = dm2.clamp_min(1e-12).sqrt()
    return (dm / d ** 0.5 - dx / big_d ** 0.5).pow(2).mean()


def kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mean, exp(logvar)) || N(0, 1) ) averaged over the batch AND the latent dimensions (nats per dim)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
