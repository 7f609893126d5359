"""Real FID, only with a feature extractor the USER provides (nothing is ever downloaded).

latentgeo does not ship Inception-v3 (it would need torchvision or a download). To compute a true FID, pass a
TorchScript file of an Inception feature extractor, e.g. the ``inception-2015-12-05.pt`` file used by the
StyleGAN2/3 metrics code, which maps float images ``[B, 3, H, W]`` with values in [0, 255] to ``[B, 2048]`` pool
features (called with ``return_features=True``). TorchScript is code (a scripted ``__setstate__`` runs while
loading, ``forward`` is the file's program), so the file is loaded with ``torch.jit.load`` only with
``allow_torchscript=True``, and a ``.pt2`` archive (``torch.export.load`` may unpickle parts of it) only with
``allow_pickle=True``: only for files you trust.

The extractor's call convention is configurable: ``resize`` (bilinear resize first, e.g. 299), ``value_range``
(pixel range it expects), ``call_kwargs`` (extra keyword arguments, e.g. ``{"return_features": True}``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from latentgeo.errors import LatentgeoError, check_finite
from latentgeo.metrics.distances import frechet_distance, gaussian_stats

__all__ = ["TorchScriptFeatures", "fid"]


class TorchScriptFeatures:
    """Wrap a user-provided TorchScript feature extractor as ``features(images) -> [B, F]``.

    Args:
        path: TorchScript file (``torch.jit.save`` output).
        input_range: pixel range of the images passed to :meth:`__call__` (latentgeo images are in [-1, 1]).
        value_range: pixel range the extractor expects ([0, 255] for the StyleGAN Inception file).
        resize: side length to resize to (None = keep).
        channels: replicate grayscale images to this many channels (3 for Inception).
        call_kwargs: extra keyword arguments for the extractor call.
        allow_torchscript: load a TorchScript file (it is code; required for ``.pt`` / ``.ts``).
        allow_pickle: load a ``.pt2`` torch.export archive (it may unpickle; required for ``.pt2``).
    """

    def __init__(self, path: Union[str, Path], input_range: Tuple[float, float] = (-1.0, 1.0),
                 value_range: Tuple[float, float] = (0.0, 255.0), resize: Optional[int] = 299, channels: int = 3,
                 call_kwargs: Optional[Dict[str, Any]] = None, device: Union[str, torch.device] = "cpu", *,
                 allow_torchscript: bool = False, allow_pickle: bool = False):
        path = Path(path)
        if not path.is_file():
            raise LatentgeoError(f"feature extractor file '{path}' does not exist; pass the path of a TorchScript "
                                 "Inception file you downloaded yourself (latentgeo never downloads weights)")
        if path.suffix == ".pt2" and not allow_pickle:
            raise LatentgeoError(f"'{path}' is a torch.export archive, and torch.export.load may unpickle parts of "
                                 "it; pass allow_pickle=True only for a file you trust")
        if path.suffix != ".pt2" and not allow_torchscript:
            raise LatentgeoError(f"'{path}' is loaded as TorchScript, which is code (its __setstate__ runs while "
                                 "loading); pass allow_torchscript=True only for a file you trust")
        try:
            if path.suffix == ".pt2":  # a torch.export archive (the successor of TorchScript)
                self.model = torch.export.load(str(path)).module().to(device)
            else:
                with warnings.catch_warnings():  # TorchScript is deprecated upstream but is what FID files use
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise LatentgeoError(f"'{path}' is not a TorchScript (or .pt2 torch.export) file ({type(exc).__name__}); "
                                 "export the extractor with torch.jit.save or torch.export.save") from exc
        self.input_range = tuple(float(v) for v in input_range)
        self.value_range = tuple(float(v) for v in value_range)
        self.resize = resize
        self.channels = channels
        self.call_kwargs = dict(call_kwargs or {})
        self.device = torch.device(device)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise LatentgeoError(f"images must have shape [B, C, H, W] or [B, H, W], got {tuple(x.shape)}; reshape them")
        lo, hi = self.input_range
        vlo, vhi = self.value_range
        x = (x.float().clamp(lo, hi) - lo) / (hi - lo) * (vhi - vlo) + vlo
        if self.channels and x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x.to(self.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(self._prep(x), **self.call_kwargs)
        return out.reshape(out.shape[0], -1).double().cpu()


@torch.no_grad()
def fid(samples, reference, extractor: Union[TorchScriptFeatures, str, Path], batch_size: int = 64, *,
        allow_torchscript: bool = False) -> float:
    """Frechet Inception Distance between ``samples`` and ``reference`` images ([N, C, H, W], pixel range of the
    extractor's ``input_range``), with a user-provided extractor (a :class:`TorchScriptFeatures`, or a TorchScript
    file path with ``allow_torchscript=True``)."""
    if not isinstance(extractor, TorchScriptFeatures):
        extractor = TorchScriptFeatures(extractor, allow_torchscript=allow_torchscript)

    def feats(x) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        check_finite(x, "images")
        return torch.cat([extractor(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    m1, c1 = gaussian_stats(feats(samples))
    m2, c2 = gaussian_stats(feats(reference))
    return frechet_distance(m1, c1, m2, c2)
