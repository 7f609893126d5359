"""Plots for ``latentgeo geometry``: distance scatter, ratio histogram, 2-D embeddings (matplotlib, Agg)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from latentgeo.checkpoint import atomic_write_bytes

__all__ = ["plot_geometry"]


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_geometry(report: Dict, out: Path, x: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                  title: str = "", max_pairs: int = 20000, seed: int = 0) -> List[Path]:
    """Write ``distance_scatter.png`` and ``ratio_hist.png`` (needs ``report`` made with ``return_pairs``) and, for
    vector data with ``x``/``z`` given, ``embedding_2d.png`` (data's first two coordinates vs the first two latent
    coordinates, coloured by the data's polar angle). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    dx, dz = report["pairs"]["dx"], report["pairs"]["dz"]
    rng = np.random.default_rng(seed)
    sel = rng.choice(len(dx), size=min(max_pairs, len(dx)), replace=False)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.scatter(dx[sel], dz[sel], s=2, alpha=0.3)
    lim = float(max(dx[sel].max(), dz[sel].max()))
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="isometry")
    ax.set_xlabel("|x_i - x_j|")
    ax.set_ylabel("|E x_i - E x_j|" + (f"  (x{report['scale']:.3g})" if report.get("scale", 1.0) != 1.0 else ""))
    ax.set_title(f"{title} Spearman {report['spearman']:.3f}".strip())
    ax.legend(loc="upper left")
    paths.append(_save(fig, out / "distance_scatter.png"))
    plt.close(fig)

    keep = dx > 0
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.hist(np.log(np.maximum(dz[keep], 1e-12) / dx[keep]), bins=80)
    ax.axvline(0.0, color="k", ls="--", lw=1)
    ax.set_xlabel("log(d_Z / d_X)")
    ax.set_ylabel("pairs")
    ax.set_title(f"{title} trimmed bi-Lipschitz {report['trimmed_bilipschitz']:.3g}".strip())
    paths.append(_save(fig, out / "ratio_hist.png"))
    plt.close(fig)

    if x is not None and z is not None and x.ndim == 2 and x.shape[1] >= 2:
        xn = x.detach().double().cpu().numpy()
        zn = z.detach().double().cpu().reshape(z.shape[0], -1).numpy()
        if zn.shape[1] > 2:  # show the top-2 principal plane of the latents
            zc = zn - zn.mean(0)
            _, _, vt = np.linalg.svd(zc, full_matrices=False)
            zn = zc @ vt[:2].T
        elif zn.shape[1] == 1:
            zn = np.concatenate([zn, np.zeros_like(zn)], 1)
        colour = np.arctan2(xn[:, 1], xn[:, 0])
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
        axes[0].scatter(xn[:, 0], xn[:, 1], c=colour, s=3, cmap="hsv")
        axes[0].set_title("data (first two coordinates)")
        axes[1].scatter(zn[:, 0], zn[:, 1], c=colour, s=3, cmap="hsv")
        axes[1].set_title(f"{title} latents".strip())
        for a in axes:
            a.set_aspect("equal", "datalim")
        paths.append(_save(fig, out / "embedding_2d.png"))
        plt.close(fig)
    return paths
