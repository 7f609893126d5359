"""One entry point for every data set: :func:`load` by name or by path, plus :data:`DATASETS` and summaries."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from latentgeo.data import images as _img
from latentgeo.data import synthetic as _syn
from latentgeo.errors import LatentgeoError

__all__ = ["DATASETS", "DEFAULT_N", "load", "is_image", "content_hash", "describe", "split_seed"]

#: Names accepted by :func:`load` with a one-line description each (any .npy/.npz file or PNG folder works too).
DATASETS: Dict[str, str] = {
    "digits": "scikit-learn 8x8 digits [N,1,8,8] in [-1,1]; 1,438 train / 359 test (seeded split); no download",
    "fashion-mnist": "Fashion-MNIST [N,1,28,28] (32x32 with pad) in [-1,1]; 60k train / 10k test IDX files",
    "gmm": "GPE §8.1 mixture: 8 Gaussians on a circle in the first 2 of 10 coordinates, N(0,0.05^2) elsewhere [N,10]",
    "gmm2d": "the same 8-component Gaussian mixture in R^2 [N,2]",
    "embedded": "y ~ N(0,I_2) embedded isometrically as the first two coordinates of R^16 [N,16]",
    "anisotropic": "N(0,I_2) mapped by diag(sqrt(1+d0), sqrt(1-d0)), d0 = 0.5 [N,2]",
    "ripple": "N(0,I_2) mapped to (x1, x2, eps0 sin(omega x1)), eps0 = 0.1, omega = 5 [N,3]",
    "moons": "two interleaved half circles, noise 0.1 [N,2]",
    "rings": "three concentric rings of radii 1/3, 2/3, 1, noise 0.05 [N,2]",
    "checkerboard": "uniform on the dark squares of a 4x4 checkerboard on [-2,2]^2 [N,2]",
    "alanine": "alanine dipeptide energy table, rows (phi, psi, U) on the 89x89 grid, shipped with latentgeo [7921,3]",
}

_ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "mnist-fashion": "fashion-mnist", "two_moons": "moons", "two-moons": "moons"}

#: Samples drawn from a synthetic data set when ``n`` is not given.
DEFAULT_N = 10_000

# Offset that makes the "test" split of a synthetic set an independent stream from its "train" split.
_TEST_SEED_OFFSET = 1_000_003


def split_seed(seed: int, split: str) -> int:
    """Seed actually used by synthetic sets: ``seed`` for ``"train"``, ``seed + 1_000_003`` for ``"test"``."""
    if split not in ("train", "test"):
        raise LatentgeoError(f"unknown split '{split}'; choose one of: train, test")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LatentgeoError(f"seed must be an integer, got {seed!r}; pass a whole number such as 0")
    return seed if split == "train" else seed + _TEST_SEED_OFFSET


_SAMPLER_NAMES = {"gmm": "gaussian_mixture_subspace", "gmm2d": "gaussian_mixture_subspace",
                  "embedded": "embedded_gaussian", "anisotropic": "anisotropic_gaussian", "ripple": "ripple",
                  "moons": "two_moons", "rings": "rings", "checkerboard": "checkerboard"}


_SYN_DIMS = {"gmm": 10, "gmm2d": 2, "embedded": 16, "anisotropic": 2, "ripple": 3, "moons": 2, "rings": 2,
             "checkerboard": 2}


def _available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(name: str, n: Any, options: Dict[str, Any]) -> None:
    """Refuse, before drawing, a synthetic sample that cannot fit in memory (float64 work arrays, a few of them)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return  # the sampler's own check gives the message
    dim = options.get("dim", _SYN_DIMS.get(name, 2))
    dim = dim if isinstance(dim, int) and dim > 0 else 2
    need = 4 * 8 * n * dim
    avail = _available_memory()
    if avail is not None and need > avail:
        raise LatentgeoError(f"n={n:,} samples of '{name}' need about {need / 2 ** 30:.1f} GiB of memory but "
                             f"{avail / 2 ** 30:.1f} GiB are available; pass a smaller n (--n)")


def _synthetic(name: str, n: int, seed: int, options: Dict[str, Any]) -> torch.Tensor:
    _check_memory(name, n, options)
    fns = {
        "gmm": lambda: _syn.gaussian_mixture_subspace(n, seed=seed, **options),
        "gmm2d": lambda: _syn.gaussian_mixture_subspace(n, **{"dim": 2, **options}, seed=seed),
        "embedded": lambda: _syn.embedded_gaussian(n, seed=seed, **options),
        "anisotropic": lambda: _syn.anisotropic_gaussian(n, seed=seed, **options),
        "ripple": lambda: _syn.ripple(n, seed=seed, **options),
        "moons": lambda: _syn.two_moons(n, seed=seed, **options),
        "rings": lambda: _syn.rings(n, seed=seed, **options),
        "checkerboard": lambda: _syn.checkerboard(n, seed=seed, **options),
    }
    try:
        return fns[name]()
    except TypeError as exc:
        raise LatentgeoError(
            f"bad option for data set '{name}' ({exc}); see help(latentgeo.data.{_SAMPLER_NAMES[name]})"
        ) from None


def _grid_rows(phi: Any, psi: Any, energy: Any) -> torch.Tensor:
    """``(phi [P], psi [Q], U [P, Q])`` grid -> float32 rows ``(phi_i, psi_j, U_ij)`` ``[P*Q, 3]``, phi slowest."""
    phi, psi, energy = (np.asarray(a, dtype=np.float64) for a in (phi, psi, energy))
    if phi.ndim != 1 or psi.ndim != 1 or energy.shape != (phi.size, psi.size):
        raise LatentgeoError(
            f"alanine table has unexpected shapes phi {phi.shape}, psi {psi.shape}, U {energy.shape}; "
            "reinstall latentgeo"
        )
    a, b = np.meshgrid(phi, psi, indexing="ij")
    return torch.as_tensor(np.stack([a.reshape(-1), b.reshape(-1), energy.reshape(-1)], axis=1), dtype=torch.float32)


def _alanine() -> torch.Tensor:
    from latentgeo.data.alanine import load_alanine_table

    return _grid_rows(*load_alanine_table())


def _pad28(x: torch.Tensor, source: str) -> torch.Tensor:
    if not is_image(x) or tuple(x.shape[-2:]) != (28, 28):
        raise LatentgeoError(
            f"pad turns 28x28 images into 32x32, but {source} has shape {tuple(x.shape)}; drop --pad"
        )
    return torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)


def canonical_name(name_or_path: Union[str, os.PathLike]) -> Optional[str]:
    """The :data:`DATASETS` key that ``name_or_path`` names (aliases resolved), or None for a path / unknown name."""
    raw = os.fspath(name_or_path)
    key = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if key in DATASETS and not (Path(raw).exists() and _looks_like_path(raw)):
        return key
    return None


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith(".") or s.startswith("~") or Path(s).suffix.lower() in (".npy", ".npz")


def load(
    name_or_path: Union[str, os.PathLike],
    split: str = "train",
    n: Optional[int] = None,
    seed: int = 0,
    path: Optional[Union[str, os.PathLike]] = None,
    pad: bool = False,
    **options: Any,
) -> torch.Tensor:
    """Load a data set by name (see :data:`DATASETS`) or from a ``.npy``/``.npz`` file or PNG folder.

    Returns a float32 tensor: ``[N, D]`` for point clouds, ``[N, C, H, W]`` in [-1, 1] for images.

    * ``split``: ``"train"`` or ``"test"``. Synthetic sets draw ``test`` from an independent seed
      (:func:`split_seed`); digits uses a seeded permutation; Fashion-MNIST its own files; files and PNG folders
      have no split and are returned whole.
    * ``n``: number of samples (synthetic default :data:`DEFAULT_N`; for real data the first ``n`` of the split).
    * ``seed``: sampling seed (synthetic) or split seed (digits).
    * ``path``: the folder holding the Fashion-MNIST IDX files (else ``$LATENTGEO_DATA``, else
      ``/usr/share/datasets/fashion-mnist/``).
    * ``pad``: pad 28x28 images to 32x32 with the background value -1.
    * ``options``: extra keyword arguments for the underlying loader (e.g. ``dim=32`` for ``gmm``,
      ``delta0=0.3`` for ``anisotropic``, ``key="images"`` for an ``.npz``).

    ``"alanine"`` returns the alanine dipeptide energy table shipped with latentgeo (:mod:`latentgeo.data.alanine`) as rows
    ``(phi, psi, U)`` ``[7921, 3]`` (phi slowest; angles in radians, U in kT); it has no split.

    Every user-fixable problem (unknown name, missing file, NaN/inf, wrong rank, empty or corrupt file) raises
    :class:`~latentgeo.errors.LatentgeoError` with a one-line fix.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise LatentgeoError(f"data set must be a name or a path, got {type(name_or_path).__name__}; pass e.g. "
                             "'digits' or a .npy file")
    raw = os.fspath(name_or_path)
    key = raw.strip().lower()
    key = _ALIASES.get(key, key)
    if key in DATASETS and not (Path(raw).exists() and _looks_like_path(raw)):
        if split not in ("train", "test"):
            raise LatentgeoError(f"unknown split '{split}'; choose one of: train, test")
        if key == "fashion-mnist":
            x = _img.fashion_mnist(split=split, path=path, n=n, **options)
        elif key == "digits":
            x = _img.digits(split=split, seed=seed, n=n, **options)
        elif key == "alanine":
            x = _alanine()
            if n is not None:
                x = x[: _img._check_take(n, x.shape[0], "alanine")]
        else:
            n_draw = DEFAULT_N if n is None else n
            x = _synthetic(key, n_draw, split_seed(seed, split), options)
    else:
        p = Path(raw).expanduser()
        if p.is_dir():
            x = _img.load_png_folder(p, n=n)
        elif p.suffix.lower() in (".npy", ".npz"):
            x = _img.load_array(p, **options)
            if n is not None:
                x = x[: _img._check_take(n, x.shape[0], f"'{p}'")]
        elif p.exists():
            raise LatentgeoError(f"'{p}' is neither a .npy/.npz file nor a folder of PNGs; convert it or pass a data set name")
        elif _looks_like_path(raw):
            raise LatentgeoError(f"no such file or folder '{p}'; check the path")
        else:
            raise LatentgeoError(
                f"unknown data set '{raw}'; choose one of: {', '.join(DATASETS)} (see `latentgeo data list`), "
                "or pass a path to a .npy/.npz file or a PNG folder"
            )
    if pad:
        x = _pad28(x, f"'{raw}'")
    return x


def is_image(x: Any) -> bool:
    """True for image batches ``[N, C, H, W]`` (rank 4), False for point clouds ``[N, D]``."""
    return hasattr(x, "ndim") and x.ndim == 4


def content_hash(x: torch.Tensor) -> str:
    """First 16 hex digits of the sha256 of the tensor's float32 bytes (C order, native little-endian)."""
    a = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(a.astype("<f4", copy=False).tobytes()).hexdigest()[:16]


def describe(x: torch.Tensor) -> Dict[str, Any]:
    """Summary of a data tensor: size, shape, dtype, min/max, mean/std (over all entries) and content hash."""
    xf = x.detach().to(torch.float64)
    return {
        "size": int(x.shape[0]) if x.ndim else 1,
        "shape": list(x.shape),
        "dtype": str(x.dtype).replace("torch.", ""),
        "min": float(xf.min()) if x.numel() else float("nan"),
        "max": float(xf.max()) if x.numel() else float("nan"),
        "mean": float(xf.mean()) if x.numel() else float("nan"),
        "std": float(xf.std(unbiased=False)) if x.numel() else float("nan"),
        "hash": content_hash(x),
    }
