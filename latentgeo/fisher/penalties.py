"""Encoder-side penalties on latent diffusability, measured on data samples (REFERENCE.md §2).

An encoder is any callable ``E(x) -> z`` with ``x`` of shape ``[B, ...]`` (data, ``D = prod(...)`` numbers per
sample) and ``z`` of shape ``[B, ...]`` (``d`` numbers per sample). Everything is computed with forward-mode
derivatives (:func:`latentgeo.autodiff.jvp` / :func:`~latentgeo.autodiff.jvp2`: forward mode where the encoder's ops
support it, else the same numbers by a reverse-mode fallback, e.g. through a diffusers VAE's attention): first
derivatives along data tangents for the tangential distortion, and a JVP of a JVP (a Hessian-vector product of each
output coordinate) for the curvature.

- :func:`dimensional_compression`: D vs d and the predicted small-tau FIR deviation ``|D - d| / (D - k)`` for data of
  intrinsic dimension ``k`` (the toy's ``(D - d)/(D - 2)``).
- :func:`tangent_basis` / :func:`local_pca_dimension`: data tangent directions by local PCA.
- :func:`tangential_distortion`: how far the pull-back metric ``G = T^T J^T J T`` is from the identity on the tangent
  space (absolute, and scale-free after dividing by ``tr G / k``).
- :func:`curvature_penalty`: second directional derivatives ``E''(x)[t, t]`` along data tangents, and their part normal
  to the encoded tangent plane (the extrinsic bending the encoder injects).
- :func:`power_spectrum`: radially averaged power spectra of images (or 1-D spectra of flat vectors).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch

from latentgeo import autodiff
from latentgeo.errors import LatentgeoError, check_finite, check_nonempty

__all__ = ["dimensional_compression", "tangent_basis", "local_pca_dimension", "tangential_distortion",
           "curvature_penalty", "power_spectrum", "high_frequency_fraction"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _check_x(x, name="x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise LatentgeoError(f"{name} has shape {tuple(x.shape)}; pass a batch [N, ...]")
    check_nonempty(x, name)
    check_finite(x, name)
    return x if x.is_floating_point() else x.float()


def dimensional_compression(D: int, d: int, intrinsic_dim: int = 2) -> Dict[str, float]:
    """Predicted small-tau FIR deviation from a change of ambient dimension alone.

    For data of intrinsic dimension ``k`` isometrically embedded in R^n, ``R^(n)(tau) ~ -(n - k)/tau^2`` as tau -> 0,
    so ``D_R(0+) = |D - d| / (D - k)``; with ``k = 2`` this is the paper's ``(D - d)/(D - 2)`` line. For large tau
    every law looks like ``N(m, tau I)`` (``R ~ -n/tau^2``), so ``D_R -> |D - d| / D``.

    Returns ``{"D", "d", "intrinsic_dim", "ratio" (d/D), "predicted_dr_small_tau", "predicted_dr_large_tau"}``.
    """
    D, d, k = int(D), int(d), int(intrinsic_dim)
    if D < 1 or d < 1 or k < 0:
        raise LatentgeoError(f"dimensions must be positive, got D={D}, d={d}, intrinsic_dim={k}; "
                             "pass D, d >= 1 and intrinsic_dim >= 0")
    if k >= D:
        raise LatentgeoError(f"intrinsic_dim ({k}) must be below the data dimension D ({D}); the small-tau "
                             "prediction needs data on a lower-dimensional set")
    return {"D": D, "d": d, "intrinsic_dim": k, "ratio": d / D, "predicted_dr_small_tau": abs(D - d) / (D - k),
            "predicted_dr_large_tau": abs(D - d) / D}


def _local_svd(x: torch.Tensor, n_neighbors: int):
    xf = _flat(x).to(torch.float64)
    N = xf.shape[0]
    m = int(n_neighbors)
    if m < 2 or m >= N:
        raise LatentgeoError(f"n_neighbors must be in [2, N-1] = [2, {N - 1}], got {m}; pass more samples or fewer "
                             "neighbours")
    d2 = torch.cdist(xf, xf)
    idx = d2.topk(m + 1, largest=False).indices  # includes the point itself
    nb = xf[idx]  # [N, m+1, D]
    nb = nb - nb.mean(1, keepdim=True)
    _, S, Vh = torch.linalg.svd(nb, full_matrices=False)
    return S, Vh


def tangent_basis(x: torch.Tensor, k: int, n_neighbors: int = 16) -> torch.Tensor:
    """Orthonormal tangent directions of the data at each sample by local PCA.

    Args:
        x: samples [N, ...] (``D = prod(...)``).
        k: tangent dimension.
        n_neighbors: neighbours per local PCA (Euclidean, within ``x``).
    Returns:
        ``[N, k, D]`` float64, rows orthonormal (the top-k principal directions of each neighbourhood).
    """
    x = _check_x(x)
    if not 1 <= int(k) <= min(_flat(x).shape[1], int(n_neighbors)):
        raise LatentgeoError(f"tangent dimension k={k} must be between 1 and min(D, n_neighbors); lower k")
    _, Vh = _local_svd(x, n_neighbors)
    return Vh[:, : int(k)]


def local_pca_dimension(x: torch.Tensor, n_neighbors: int = 16, threshold: float = 0.9) -> int:
    """Intrinsic-dimension estimate: the median over samples of the number of local principal components needed to
    explain ``threshold`` of the neighbourhood variance."""
    x = _check_x(x)
    S, _ = _local_svd(x, n_neighbors)
    var = S ** 2
    frac = var.cumsum(1) / var.sum(1, keepdim=True).clamp_min(1e-300)
    kk = (frac < threshold).sum(1) + 1
    return int(kk.median())


def intrinsic_curvature(x: torch.Tensor, k: int, n_neighbors: int = 24) -> Dict[str, object]:
    """Curvature of the data manifold itself (the Fisher paper v2's "intrinsic data curvature" penalty), from samples.

    At each sample ``x_i``: local PCA of its ``n_neighbors`` nearest neighbours gives tangent directions ``U`` [k, D];
    the neighbours' offsets ``y = x_j - x_i`` split into tangent coordinates ``t = U y`` and normal parts
    ``n = y - U^T t``; least squares fits ``n ~ L t + (1/2) B(t, t)`` (the linear term absorbs the error of the
    estimated tangent plane), and ``B`` estimates the second fundamental form. Per sample the RMS normal curvature
    over unit tangent directions ``u``, ``kappa = sqrt(E_u |B(u, u)|^2)`` with
    ``E_u |B(u,u)|^2 = (|sum_a B_aa|^2 + 2 sum_ab |B_ab|^2) / (k (k + 2))``: ``1/R`` on a circle or sphere of radius
    ``R``, 0 on a flat set. It needs no encoder derivatives, so it also applies to any encoder's latent set (where it
    shows the bending the encoder adds).

    Args:
        x: samples [N, ...]; k: manifold dimension (local-PCA estimate, e.g. :func:`local_pca_dimension`);
        n_neighbors: neighbours per fit (>= k (k + 3) / 2 + 2, for the quadratic fit).
    Returns:
        ``kappa_rms`` (sqrt of the mean of kappa^2, in 1/units of x), ``kappa_median``, ``kappa_h`` (kappa times the
        median neighbourhood radius: dimensionless bending across one neighbourhood), ``k``, ``n_neighbors`` and
        ``per_sample_kappa`` [N].
    """
    x = _check_x(x)
    xf = _flat(x).to(torch.float64)
    N, D = xf.shape
    k, m = int(k), int(n_neighbors)
    n_feat = k + k * (k + 1) // 2
    if not 1 <= k < D:
        raise LatentgeoError(f"manifold dimension k={k} must be in [1, D-1] = [1, {D - 1}]; lower k")
    if m < n_feat + 2 or m >= N:
        raise LatentgeoError(f"n_neighbors={m} must be in [{n_feat + 2}, N-1={N - 1}] for a quadratic fit in k={k} "
                             "dimensions; pass more samples, more neighbours or a lower k")
    d2 = torch.cdist(xf, xf)
    idx = d2.topk(m + 1, largest=False).indices[:, 1:]  # [N, m] without the point itself
    Y = xf[idx] - xf[:, None, :]  # [N, m, D]
    Yc = Y - Y.mean(1, keepdim=True)
    U = torch.linalg.svd(Yc, full_matrices=False).Vh[:, :k]  # [N, k, D]
    t = Y @ U.transpose(1, 2)  # [N, m, k]
    nrm = Y - t @ U  # [N, m, D]
    a, b = torch.triu_indices(k, k)
    quad = t[:, :, a] * t[:, :, b]  # [N, m, k(k+1)/2]
    Phi = torch.cat([t, quad], 2)
    coef = torch.linalg.lstsq(Phi, nrm).solution[:, k:]  # [N, k(k+1)/2, D]: n = ... + c_ab t_a t_b
    # n = (1/2) B(t, t): diagonal B_aa = 2 c_aa; off-diagonal (a < b) B_ab = B_ba = c_ab
    B = torch.zeros(N, k, k, D, dtype=torch.float64, device=xf.device)
    diag = a == b
    B[:, a[diag], b[diag]] = 2 * coef[:, diag]
    B[:, a[~diag], b[~diag]] = coef[:, ~diag]
    B[:, b[~diag], a[~diag]] = coef[:, ~diag]
    tr = torch.diagonal(B, dim1=1, dim2=2).sum(-1)  # [N, D]
    e2 = ((tr ** 2).sum(-1) + 2 * (B ** 2).sum((1, 2, 3))) / (k * (k + 2))
    kappa = e2.sqrt()
    radius = Y.norm(dim=2).max(1).values
    return {"kappa_rms": float(e2.mean().sqrt()), "kappa_median": float(kappa.median()),
            "kappa_h": float((kappa * radius).median()), "k": k, "n_neighbors": m, "per_sample_kappa": kappa}


def _jvp_rows(encoder: Callable, x: torch.Tensor, tangents: torch.Tensor, batch_size: int, key=None):
    """J_E(x_i) t_ij for every sample i and tangent j: returns [N, k, d] (float64)."""
    N, k = tangents.shape[:2]
    shape = x.shape[1:]
    out = []
    xr = x.repeat_interleave(k, 0)
    tr = tangents.reshape(N * k, *shape).to(device=x.device, dtype=x.dtype)
    for s in range(0, N * k, batch_size):
        with torch.no_grad():
            _, jt = autodiff.jvp(encoder, (xr[s:s + batch_size],), (tr[s:s + batch_size],), key=key)
        out.append(_flat(jt).to(torch.float64))
    return torch.cat(out).reshape(N, k, -1)


def _ad_key(encoder):
    """What the AD stage is remembered for: the module behind a bound method / the encoder itself."""
    return getattr(encoder, "__self__", encoder)


def _prepare(encoder, x, tangents, k, n_neighbors):
    x = _check_x(x)
    if isinstance(encoder, torch.nn.Module):
        encoder = encoder.eval()
    if tangents is None:
        if k is None:
            k = local_pca_dimension(x, n_neighbors)
        tangents = tangent_basis(x, k, n_neighbors)
    tangents = torch.as_tensor(tangents)
    if tangents.ndim == 2:  # one shared set of directions [k, D]
        tangents = tangents[None].expand(x.shape[0], *tangents.shape)
    if tangents.ndim != 3 or tangents.shape[0] != x.shape[0] or tangents.shape[2] != _flat(x).shape[1]:
        raise LatentgeoError(f"tangents have shape {tuple(tangents.shape)}; pass [N, k, D] or [k, D] with "
                             f"N={x.shape[0]}, D={_flat(x).shape[1]}")
    return encoder, x, tangents


def tangential_distortion(encoder: Callable, x: torch.Tensor, tangents: Optional[torch.Tensor] = None,
                          k: Optional[int] = None, n_neighbors: int = 16, scale: float = 1.0,
                          batch_size: int = 4096) -> Dict[str, object]:
    """How far the encoder's pull-back metric on the data tangent space is from the identity.

    With ``T`` the orthonormal tangent directions at ``x`` ([k, D]) and ``J`` the encoder Jacobian (times ``scale``,
    e.g. the ratio of data and latent normalisations), ``G = (J T^T)^T (J T^T)`` is ``k x k``. Per sample:

    - ``distortion = |G - I|_F / sqrt(k)``           (0 for a local isometry; ``delta0`` for ``diag(sqrt(1 +- delta0))``)
    - ``anisotropy = |G / (tr G / k) - I|_F / sqrt(k)`` (scale-free: 0 for a conformal map)
    - ``metric_scale = tr G / k``                      (mean squared stretch)

    Args:
        tangents: [N, k, D] or [k, D] orthonormal directions; default local PCA with ``k`` (estimated if None).
    Returns:
        dict with the means (``distortion``, ``anisotropy``, ``metric_scale``), ``k`` and the per-sample tensors
        (``per_sample_distortion`` [N], ``per_sample_anisotropy`` [N]).
    """
    encoder, x, T = _prepare(encoder, x, tangents, k, n_neighbors)
    k = T.shape[1]
    JT = _jvp_rows(encoder, x, T, batch_size, key=_ad_key(encoder)) * float(scale)  # [N, k, d]
    G = JT @ JT.transpose(1, 2)
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    dist = (G - eye).flatten(1).norm(dim=1) / math.sqrt(k)
    ms = torch.diagonal(G, dim1=1, dim2=2).sum(1) / k
    aniso = (G / ms.clamp_min(1e-300)[:, None, None] - eye).flatten(1).norm(dim=1) / math.sqrt(k)
    return {"distortion": float(dist.mean()), "anisotropy": float(aniso.mean()), "metric_scale": float(ms.mean()),
            "k": int(k), "per_sample_distortion": dist, "per_sample_anisotropy": aniso}


def curvature_penalty(encoder: Callable, x: torch.Tensor, tangents: Optional[torch.Tensor] = None,
                      k: Optional[int] = None, n_neighbors: int = 16, scale: float = 1.0,
                      batch_size: int = 2048, step: Optional[float] = None) -> Dict[str, object]:
    """Second directional derivatives of the encoder along data tangents.

    ``step=None``: exact second derivatives (forward-over-forward JVP). ``step=h``: the central second difference
    ``(E(x + h t) - 2 E(x) + E(x - h t)) / h^2`` at data scale ``h`` instead, which also sees the kinks of
    piecewise-linear (ReLU / LeakyReLU) encoders, whose exact second derivative is 0 almost everywhere.

    For each sample and tangent ``t``: ``a = E''(x)[t, t] = d^2/ds^2 E(x + s t)`` at s = 0 (forward-over-forward JVP),
    and ``a_perp``, its component orthogonal to the encoded tangent plane ``span{J t_j}`` (the bending an isometric
    encoder would still inject; the tangential part is only a reparametrisation). ``scale`` multiplies E.

    Returns dict: ``curvature_rms = sqrt(mean |a|^2)``, ``normal_curvature_rms = sqrt(mean |a_perp|^2)``,
    ``relative_normal_curvature`` (mean of ``|a_perp| / |J t|^2``, the normal curvature of the image curve in
    1/latent-length units), ``relative_curvature`` (same with ``|a|``; use it when ``k >= d`` and nothing is
    normal: ``normal_defined`` is False then), ``k``, and per-sample ``per_sample_normal_curvature`` [N] (rms over tangents),
    ``per_sample_relative_normal_curvature`` / ``per_sample_relative_curvature`` [N] (means over tangents).
    """
    encoder, x, T = _prepare(encoder, x, tangents, k, n_neighbors)
    N, k = T.shape[:2]
    shape = x.shape[1:]
    xr = x.repeat_interleave(k, 0)
    tr = T.reshape(N * k, *shape).to(device=x.device, dtype=x.dtype)
    key = _ad_key(encoder)
    firsts, seconds = [], []
    for s in range(0, N * k, batch_size):
        xb, tb = xr[s:s + batch_size], tr[s:s + batch_size]
        with torch.no_grad():
            if step is None:
                jt, a = autodiff.jvp2(encoder, xb, tb, key=key)
            else:
                h = float(step)
                _, jt = autodiff.jvp(encoder, (xb,), (tb,), key=key)
                e = encoder(torch.cat([xb + h * tb, xb, xb - h * tb]))
                ep, e0, em = e.chunk(3)
                a = (ep - 2 * e0 + em) / h ** 2
        firsts.append(_flat(jt).to(torch.float64))
        seconds.append(_flat(a).to(torch.float64))
    JT = torch.cat(firsts).reshape(N, k, -1) * float(scale)
    A = torch.cat(seconds).reshape(N, k, -1) * float(scale)
    # orthonormal basis of the encoded tangent plane (QR of J T^T), then remove that part of a
    Q, _ = torch.linalg.qr(JT.transpose(1, 2))  # [N, d, k]
    A_perp = A - (A @ Q) @ Q.transpose(1, 2)
    a2 = (A ** 2).sum(-1)
    ap = (A_perp ** 2).sum(-1)
    jt2 = (JT ** 2).sum(-1).clamp_min(1e-300)
    rel = ap.sqrt() / jt2
    rel_all = a2.sqrt() / jt2
    return {"step": step, "curvature_rms": float(a2.mean().sqrt()), "normal_curvature_rms": float(ap.mean().sqrt()),
            "relative_normal_curvature": float(rel.mean()), "relative_curvature": float(rel_all.mean()),
            "normal_defined": bool(k < A.shape[-1]), "k": int(k),
            "per_sample_normal_curvature": ap.mean(1).sqrt(),
            # per-sample means over the tangents: their mean is exactly the relative curvatures above
            "per_sample_relative_normal_curvature": rel.mean(1), "per_sample_relative_curvature": rel_all.mean(1)}


def power_spectrum(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum.

    Args:
        images: ``[N, C, H, W]`` or ``[N, H, W]`` (spatial); ``[N, L]`` is treated as N one-dimensional signals.
    Returns:
        ``(freq, power)``, both float64 [R]: ``freq`` in cycles per pixel (0 ... ~0.5 at Nyquist, integer-radius bins
        of width 1/max(H, W)); ``power`` the mean of ``|FFT|^2 / (H W)`` over images, channels and the bin, after
        removing each image's per-channel mean. Parseval: ``sum`` over all FFT bins equals the pixel variance times
        the pixel count.
    """
    x = _check_x(images, "images").to(torch.float64)
    if x.ndim == 2:
        x = x - x.mean(1, keepdim=True)
        L = x.shape[1]
        P = (torch.fft.rfft(x, dim=1).abs() ** 2 / L).mean(0)
        return torch.fft.rfftfreq(L, dtype=torch.float64, device=x.device), P
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise LatentgeoError(f"images have shape {tuple(x.shape)}; pass [N, C, H, W], [N, H, W] or [N, L]")
    H, W = x.shape[-2:]
    x = x - x.mean((-2, -1), keepdim=True)
    F = torch.fft.fft2(x).abs() ** 2 / (H * W)
    F = F.mean((0, 1))  # [H, W]
    dev = x.device
    fy = torch.fft.fftfreq(H, dtype=torch.float64, device=dev)[:, None]
    fx = torch.fft.fftfreq(W, dtype=torch.float64, device=dev)[None, :]
    r = torch.sqrt(fy ** 2 + fx ** 2) * max(H, W)
    b = torch.round(r).long().flatten()
    nb = int(b.max()) + 1
    tot = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(0, b, F.flatten())
    cnt = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(0, b, torch.ones_like(F.flatten()))
    keep = cnt > 0
    freq = torch.arange(nb, dtype=torch.float64, device=dev) / max(H, W)
    return freq[keep], (tot / cnt.clamp_min(1))[keep]


def high_frequency_fraction(freq: torch.Tensor, power: torch.Tensor, cutoff: float = 0.25) -> float:
    """Share of the (non-DC) spectral power at frequencies above ``cutoff`` cycles/pixel (0.25 = half Nyquist)."""
    m = freq > 0
    tot = float(power[m].sum())
    return float(power[freq > cutoff].sum()) / tot if tot > 0 else 0.0
