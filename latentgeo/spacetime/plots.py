"""Plots of spacetime geodesics: curves in (sigma, x) for low dimensions, image strips for images.

All functions return PNG bytes (write them with :func:`latentgeo.checkpoint.atomic_write_bytes`).
"""
from __future__ import annotations

import io
from typing import Callable, Optional, Sequence

import numpy as np
import torch

__all__ = ["curve_png", "image_strip_png", "scatter_png", "matrix_png", "decoded_strip_png"]


def _fig_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curve_png(xs: torch.Tensor, sigmas: torch.Tensor, title: str = "", data: Optional[torch.Tensor] = None,
              labels: Optional[Sequence[str]] = None) -> bytes:
    """One or more curves ``xs`` [N, n] or [P, N, n] (n <= 3 shown) with ``sigmas`` [N] / [P, N].

    Left: each coordinate against log-SNR ``lambda = -2 log sigma``; right (n >= 2): the path in the (x1, x2)
    plane coloured by sigma, over ``data`` points [M, n] if given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = xs.detach().cpu().double()
    sg = sigmas.detach().cpu().double()
    if sg.ndim == 1:
        xs, sg = xs[None], sg[None]
    xs = xs.reshape(xs.shape[0], xs.shape[1], -1)
    n = xs.shape[-1]
    lam = (-2 * torch.log(sg)).numpy()
    two = n >= 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(10 if two else 6, 4))
    ax0 = axes[0] if two else axes
    for p in range(xs.shape[0]):
        for j in range(min(n, 3)):
            lab = (labels[p] + " " if labels else "") + f"x{j + 1}"
            ax0.plot(lam[p], xs[p, :, j].numpy(), label=lab)
    ax0.set_xlabel("log-SNR λ = -2 log σ")
    ax0.set_ylabel("x")
    ax0.legend(fontsize=7)
    ax0.set_title(title or "geodesic in (λ, x)")
    if two:
        ax1 = axes[1]
        if data is not None:
            d = data.detach().cpu().reshape(data.shape[0], -1).numpy()
            ax1.scatter(d[:, 0], d[:, 1], s=2, c="0.7", alpha=0.5)
        for p in range(xs.shape[0]):
            sc = ax1.scatter(xs[p, :, 0].numpy(), xs[p, :, 1].numpy(), c=sg[p].numpy(), cmap="viridis", s=10)
            ax1.plot(xs[p, :, 0].numpy(), xs[p, :, 1].numpy(), "k-", lw=0.6)
        fig.colorbar(sc, ax=ax1, label="σ")
        ax1.set_xlabel("x1")
        ax1.set_ylabel("x2")
        ax1.set_title("path in data space (colour: noise level)")
    return _fig_bytes(fig)


def image_strip_png(denoiser: Callable, xs: torch.Tensor, sigmas: torch.Tensor, k: int = 8, title: str = "") -> bytes:
    """Two rows of ``k`` images along a geodesic: the noisy ``x_t`` and the denoised ``E[x0 | x_t]``.

    ``xs`` [N, C, H, W] in data units ([-1, 1] images), ``sigmas`` [N].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N = xs.shape[0]
    idx = np.unique(np.linspace(0, N - 1, min(k, N)).round().astype(int))
    x = xs[idx].detach()
    s = sigmas[idx].detach().to(x.dtype)
    with torch.no_grad():
        d = denoiser(x, s)
    fig, axes = plt.subplots(2, len(idx), figsize=(1.3 * len(idx), 3.0), squeeze=False)
    for c, i in enumerate(idx):
        for r, img in enumerate((x[c], d[c])):
            a = img.cpu().float().numpy()
            a = a[0] if a.shape[0] == 1 else np.transpose((a + 1) / 2, (1, 2, 0)).clip(0, 1)
            ax = axes[r, c]
            ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=-1 if a.ndim == 2 else None,
                      vmax=1 if a.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"σ={float(sigmas[i]):.2f}", fontsize=7)
        if c == 0:
            axes[0, 0].set_ylabel("x_t", fontsize=8)
            axes[1, 0].set_ylabel("E[x0|x_t]", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _fig_bytes(fig)


def scatter_png(xs: Sequence[np.ndarray], y: np.ndarray, xlabels: Sequence[str], ylabel: str, title: str = "") -> bytes:
    """Side-by-side scatter plots of ``y`` against each array in ``xs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(xs), figsize=(4.2 * len(xs), 3.6), squeeze=False)
    for ax, x, lab in zip(axes[0], xs, xlabels):
        ax.scatter(x, y, s=12)
        ax.set_xlabel(lab)
        ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=9)
    return _fig_bytes(fig)


def matrix_png(mats: "dict", labels: Optional[np.ndarray] = None, title: str = "") -> bytes:
    """Side-by-side heat-maps of N x N distance matrices (name -> [N, N]); rows and columns sorted by ``labels`` [N]
    (when given) with class boundaries drawn, so class blocks show as darker squares on the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(mats)
    N = np.asarray(mats[names[0]]).shape[0]
    order = np.argsort(np.asarray(labels), kind="stable") if labels is not None else np.arange(N)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        M = np.asarray(mats[name], dtype=float)[np.ix_(order, order)]
        off = M[~np.eye(N, dtype=bool)]
        lo = float(off.min()) if off.size else None  # the zero diagonal would squash the colour range
        im = ax.imshow(M, cmap="viridis", interpolation="nearest", vmin=lo)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ys = np.asarray(labels)[order]
            cuts = np.flatnonzero(ys[1:] != ys[:-1]) + 0.5
            for c in cuts:
                ax.axhline(c, color="w", lw=0.4)
                ax.axvline(c, color="w", lw=0.4)
    if title:
        fig.suptitle(title, fontsize=9)
    return _fig_bytes(fig)


def decoded_strip_png(images: torch.Tensor, sigmas: Optional[torch.Tensor] = None, k: int = 10,
                      title: str = "") -> bytes:
    """One row of ``k`` decoded images along a latent geodesic: ``images`` [N, C, H, W] in [-1, 1], ``sigmas`` [N]
    (the latent noise level of each point, shown above it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N = images.shape[0]
    idx = np.unique(np.linspace(0, N - 1, min(k, N)).round().astype(int))
    fig, axes = plt.subplots(1, len(idx), figsize=(1.3 * len(idx), 1.8), squeeze=False)
    for c, i in enumerate(idx):
        a = images[i].detach().cpu().float().numpy()
        a = a[0] if a.shape[0] == 1 else np.transpose((a + 1) / 2, (1, 2, 0)).clip(0, 1)
        ax = axes[0, c]
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=-1 if a.ndim == 2 else None,
                  vmax=1 if a.ndim == 2 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        if sigmas is not None:
            ax.set_title(f"σ={float(sigmas[i]):.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _fig_bytes(fig)
