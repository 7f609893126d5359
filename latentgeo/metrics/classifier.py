"""An offline image-quality metric: a small CNN classifier trained by the package, and a Frechet distance on its
features (the FID recipe with a feature extractor that needs no download).

The classifier is trained on the dataset's own labels (digits, Fashion-MNIST, ...) and cached in the run directory
(``<run_dir>/classifier.safetensors``), so every later evaluation in that run uses the same features. Values are
comparable only between evaluations that use the same classifier file: report them as "classifier Frechet distance
(CFD)", never as FID.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from latentgeo.checkpoint import load, register_module, save
from latentgeo.errors import LatentgeoError, check_finite, check_nonempty
from latentgeo.metrics.distances import frechet_distance, gaussian_stats

__all__ = ["FeatureClassifier", "fit_feature_classifier", "load_or_fit_classifier", "classifier_features",
           "classifier_frechet_distance", "classifier_accuracy"]


def _hw(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


@register_module
class FeatureClassifier(nn.Module):
    """Small CNN classifier whose penultimate layer serves as an image feature extractor.

    Args:
        in_channels: image channels C.
        image_size: H (square) or [H, W]; inputs may be given as ``[B, C, H, W]`` or flattened ``[B, C*H*W]``.
        n_classes: number of labels.
        width: channels of the conv layers.
        feature_dim: size of the feature vector (the penultimate layer).
    Inputs are standardised with the training data's mean/std (stored buffers ``in_mean``, ``in_std``), so any
    fixed pixel scale works as long as samples and references use the SAME scale as the training data.

    ``forward(x) -> logits [B, n_classes]``; ``features(x) -> [B, feature_dim]``.
    """

    def __init__(self, in_channels: int = 1, image_size: Union[int, Sequence[int]] = 8, n_classes: int = 10,
                 width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.in_channels = int(in_channels)
        self.hw = _hw(image_size)
        c = int(width)
        # Two stride-2 stages: 8x8 -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8; pooled to 2x2 so that any size works.
        self.body = nn.Sequential(
            nn.Conv2d(self.in_channels, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.feat = nn.Linear(8 * c, int(feature_dim))
        self.head = nn.Linear(int(feature_dim), int(n_classes))
        self.register_buffer("in_mean", torch.zeros(()))
        self.register_buffer("in_std", torch.ones(()))

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.hw
        n = self.in_channels * h * w
        if x[0].numel() != n:
            raise LatentgeoError(f"the classifier expects images of {self.in_channels}x{h}x{w} = {n} values, got "
                                 f"shape {tuple(x.shape)}; pass samples of the dataset it was trained on")
        x = x.reshape(x.shape[0], self.in_channels, h, w).to(self.in_mean.dtype)
        return (x - self.in_mean) / self.in_std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] images -> [B, feature_dim] features (penultimate activations, after GELU)."""
        return F.gelu(self.feat(self.body(self._prep(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _as_images(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
    check_nonempty(t, name)
    check_finite(t, name)
    return t


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of the training data, so a cached classifier is reused only for the same data."""
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.float().contiguous().numpy().tobytes()[: 1 << 22])
    h.update(y.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fit_feature_classifier(x, y, image_shape: Optional[Sequence[int]] = None, steps: int = 600,
                           batch_size: int = 128, lr: float = 2e-3, width: int = 32, feature_dim: int = 64,
                           val_fraction: float = 0.1, seed: int = 0,
                           progress: Optional[Callable[[int, int, float], None]] = None
                           ) -> Tuple[FeatureClassifier, dict]:
    """Train a :class:`FeatureClassifier` on images ``x`` [N, C, H, W] (or [N, H, W]) with integer labels ``y`` [N].

    Adam with a cosine learning-rate decay, small random shifts (±1 px) as augmentation. A held-out split of
    ``val_fraction`` measures accuracy. ``progress(step, steps, loss)`` is called every step if given.

    Returns ``(classifier in eval mode, info)`` with ``info = {"val_accuracy", "train_seconds", "steps", ...}``.
    """
    x = _as_images(x, "x")
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise LatentgeoError(f"x has {x.shape[0]} images but y has {y.shape[0]} labels; pass one label per image")
    if image_shape is None:
        if x.ndim == 4:
            image_shape = tuple(x.shape[1:])
        elif x.ndim == 3:
            image_shape = (1,) + tuple(x.shape[1:])
        else:
            raise LatentgeoError(f"cannot infer the image shape from x of shape {tuple(x.shape)}; "
                                 "pass image_shape=(C, H, W)")
    C, H, W = (int(s) for s in image_shape)
    x = x.reshape(x.shape[0], C, H, W)
    if int(y.min()) < 0:
        raise LatentgeoError("labels must be non-negative integers; remap them to 0..K-1")
    n_classes = int(y.max()) + 1
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_val = int(round(val_fraction * x.shape[0])) if x.shape[0] >= 20 else 0
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    xt, yt = x[tr_idx], y[tr_idx]
    torch.manual_seed(seed)
    clf = FeatureClassifier(C, [H, W], n_classes, width, feature_dim)
    clf.in_mean.fill_(float(xt.mean()))
    clf.in_std.fill_(float(xt.std().clamp_min(1e-6)))
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    t0 = time.perf_counter()
    clf.train()
    loss_v = float("nan")
    for step in range(steps):
        idx = torch.randint(0, xt.shape[0], (min(batch_size, xt.shape[0]),), generator=g)
        xb = xt[idx]
        # Random +-1 pixel shifts: cheap augmentation that makes features less sensitive to sub-pixel jitter.
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(clf(xb), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_v = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_v)
    clf.eval()
    info = {"steps": steps, "train_seconds": time.perf_counter() - t0, "final_loss": loss_v,
            "n_train": int(tr_idx.numel()), "n_val": int(n_val), "fingerprint": _fingerprint(x, y)}
    info["val_accuracy"] = classifier_accuracy(clf, x[val_idx], y[val_idx]) if n_val else float("nan")
    return clf, info


@torch.no_grad()
def classifier_accuracy(classifier: FeatureClassifier, x, y, batch_size: int = 1024) -> float:
    """Fraction of ``x`` whose predicted label equals ``y``."""
    x = _as_images(x, "x")
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().reshape(-1)
    classifier.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((classifier(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, x.shape[0])


def load_or_fit_classifier(run_dir: Union[str, Path], x, y, image_shape: Optional[Sequence[int]] = None,
                           **fit_kwargs) -> Tuple[FeatureClassifier, dict]:
    """Load ``<run_dir>/classifier.safetensors`` if it was trained on the same data, else train and save it.

    The cache key is a hash of the training images and labels only: a cached classifier is reused even if
    ``fit_kwargs`` (e.g. ``steps``) differ; delete the file to retrain. Returns ``(classifier, info)``;
    ``info["cached"]`` says whether the file was reused, ``info["val_accuracy"]`` is its held-out accuracy.
    """
    run_dir = Path(run_dir)
    path = run_dir / "classifier.safetensors"
    xt = _as_images(x, "x")
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().reshape(-1)
    if image_shape is not None:
        xt = xt.reshape(xt.shape[0], *image_shape)
    elif xt.ndim == 3:
        xt = xt[:, None]
    fp = _fingerprint(xt, yt)
    if path.exists():
        try:
            clf, meta = load(path, with_meta=True)
            info = dict(meta.get("extra", {}))
            if info.get("fingerprint") == fp:
                clf.eval()
                info["cached"] = True
                return clf, info
        except LatentgeoError:
            pass  # corrupt or foreign file: retrain and overwrite
    clf, info = fit_feature_classifier(xt, yt, image_shape=image_shape, **fit_kwargs)
    run_dir.mkdir(parents=True, exist_ok=True)
    save(clf, path, extra=info)
    info = dict(info, cached=False)
    return clf, info


@torch.no_grad()
def classifier_features(classifier: Callable, x, batch_size: int = 1024) -> torch.Tensor:
    """Features [N, F] (float64) of images ``x`` [N, ...] from a :class:`FeatureClassifier` (its ``features``)
    or any callable ``[B, ...] -> [B, F]``."""
    x = _as_images(x, "samples")
    fn = classifier.features if hasattr(classifier, "features") else classifier
    if isinstance(classifier, nn.Module):
        classifier.eval()
    out = [fn(x[i:i + batch_size]).reshape(min(batch_size, x.shape[0] - i), -1).double()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def classifier_frechet_distance(samples, reference, classifier: Callable, batch_size: int = 1024) -> float:
    """Frechet distance between Gaussian fits of classifier features of ``samples`` and ``reference``.

    Args:
        samples: [N, ...] generated images, same shape and pixel scale as the classifier's training data.
        reference: [M, ...] held-out real images.
        classifier: a :class:`FeatureClassifier` (or any feature callable).
    Returns:
        CFD (squared feature units; 0 for identical feature statistics). Needs N, M >= 2; use several hundred
        samples (more than ``feature_dim``) for a stable value, and the same N when comparing models.
    """
    fs = classifier_features(classifier, samples, batch_size)
    fr = classifier_features(classifier, reference, batch_size)
    m1, c1 = gaussian_stats(fs)
    m2, c2 = gaussian_stats(fr)
    return frechet_distance(m1, c1, m2, c2)
