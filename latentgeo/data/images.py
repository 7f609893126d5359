"""Image data sets and user arrays, as float32 tensors scaled to [-1, 1].

Image contract: ``[N, C, H, W]`` float32 with pixel values in [-1, 1] (8-bit value v maps to ``v / 127.5 - 1``,
so black / background = -1 and white = +1).

* :func:`fashion_mnist` - Fashion-MNIST from its IDX files (``[N, 1, 28, 28]``, or ``[N, 1, 32, 32]`` padded).
* :func:`digits` - scikit-learn's 8x8 digits (``[N, 1, 8, 8]``), shipped inside the scikit-learn wheel: the
  embedded default that needs no download.
* :func:`load_array` - any ``.npy`` / ``.npz`` file.
* :func:`load_png_folder` - a folder of PNG files of equal size.
* :func:`read_idx` - the raw IDX reader (gzip detected from the content, not the file name).
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from latentgeo.errors import LatentgeoError

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "APT_HINT",
    "read_idx",
    "idx_shape",
    "fashion_mnist",
    "digits",
    "load_array",
    "load_png_folder",
    "scale_uint8",
]

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
APT_HINT = "sudo apt-get install -y dataset-fashion-mnist"

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/ file format).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def scale_uint8(a: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Map 8-bit pixel values in [0, 255] to float32 in [-1, 1] (``v / 127.5 - 1``)."""
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    return t.to(torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------------------


#: deflate cannot expand data by more than about 1032:1, so a gzip file of B bytes holds at most this many times B.
_GZIP_MAX_RATIO = 1100
#: IDX files whose header asks for more than this are refused as forged (Fashion-MNIST's largest file is 47 MB).
MAX_IDX_BYTES = 16 * 2 ** 30


def _open_idx(path: Path):
    """``(stream, file size, is_gzip)`` for an IDX file; gzip is detected from the magic bytes."""
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise LatentgeoError(f"'{path}' is a folder, not a file; pass the file itself") from None
    except OSError as exc:
        raise LatentgeoError(f"cannot read '{path}': {exc.strerror or exc}; check the path and its permissions") from None
    try:
        st = os.fstat(fh.fileno())
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            raise LatentgeoError(f"'{path}' is not a regular file (a FIFO, socket or device); pass the IDX file itself")
        gz = fh.read(2) == b"\x1f\x8b"
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    if gz:
        return gzip.GzipFile(fileobj=fh, mode="rb"), fh, st.st_size, True
    return fh, fh, st.st_size, False


def _idx_header(stream, path: Path, size: int, gz: bool):
    """Read and check the IDX header from ``stream``: ``(dtype, shape, header bytes, payload bytes)``."""
    head = stream.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise LatentgeoError(f"'{path}' is not an IDX file (bad magic number); check the path or re-download it")
    dtype = _IDX_DTYPES[head[2]]
    ndim = head[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise LatentgeoError(f"'{path}' is a truncated IDX file (incomplete header); re-download it")
    shape = struct.unpack(f">{ndim}I", dims)
    count = 1
    for d in shape:
        count *= int(d)
    payload = count * dtype.itemsize
    header = 4 + 4 * ndim
    shown = "x".join(str(d) for d in shape) or "a scalar"
    if header + payload > MAX_IDX_BYTES:
        raise LatentgeoError(f"'{path}' has a header that asks for {shown} values ({(header + payload) / 2 ** 30:,.1f} "
                             f"GiB), more than the {MAX_IDX_BYTES / 2 ** 30:g} GiB latentgeo reads from an IDX file "
                             "(forged or corrupt); re-download it")
    if not gz and header + payload != size:
        raise LatentgeoError(f"'{path}' is a truncated or corrupt IDX file ({size} bytes, header promises "
                             f"{header + payload}); re-download it")
    if gz and header + payload > _GZIP_MAX_RATIO * size + 1024:
        raise LatentgeoError(f"'{path}' is a gzip file of {size:,} bytes whose IDX header promises "
                             f"{header + payload:,} bytes ({shown} values), more than gzip can hold (forged or "
                             "corrupt); re-download it")
    from latentgeo.data.registry import _available_memory

    avail = _available_memory()
    if avail is not None and payload > avail:
        raise LatentgeoError(f"'{path}' holds {shown} values ({payload / 2 ** 30:,.1f} GiB) but only "
                             f"{avail / 2 ** 30:,.1f} GiB of memory are available; free memory or use a smaller file")
    return dtype, shape, header, payload


def idx_shape(path: Union[str, os.PathLike]) -> Tuple[int, ...]:
    """The shape an IDX file's header declares, read without reading (or decompressing) the data."""
    path = Path(path)
    stream, fh, size, gz = _open_idx(path)
    try:
        return tuple(int(d) for d in _idx_header(stream, path, size, gz)[1])
    except (OSError, EOFError, zlib.error) as exc:
        raise LatentgeoError(f"'{path}' is a corrupt or truncated gzip file ({exc}); download or reinstall it") from None
    finally:
        stream.close()
        fh.close()


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed; gzip is detected from the magic bytes).

    Returns a numpy array with the file's shape and native-endian dtype (uint8 for MNIST-style images
    ``[N, H, W]`` and labels ``[N]``). Raises :class:`LatentgeoError` on a truncated or corrupt file.

    The header is read first (from the gzip stream for a ``.gz`` file) and checked against the file's size --
    a gzip file cannot hold more than about 1,000 times its size -- and then exactly the bytes it declares are
    read, so a forged header never makes latentgeo decompress or allocate more than the file holds.
    """
    path = Path(path)
    stream, fh, size, gz = _open_idx(path)
    try:
        dtype, shape, header, payload = _idx_header(stream, path, size, gz)
        out = np.empty(payload // dtype.itemsize, dtype=dtype)
        view = memoryview(out).cast("B")
        got = 0
        while got < payload:
            n = stream.readinto(view[got:got + (1 << 24)])
            if not n:
                break
            got += n
        extra = stream.read(1)
        if got != payload or extra:
            total = header + got + (1 if extra else 0)
            more = "+" if extra else ""
            raise LatentgeoError(f"'{path}' is a truncated or corrupt IDX file ({total}{more} bytes"
                                 f"{' after decompression' if gz else ''}, header promises {header + payload}); "
                                 "re-download it")
    except (OSError, EOFError, zlib.error) as exc:
        if not gz:
            raise LatentgeoError(f"cannot read '{path}': {getattr(exc, 'strerror', None) or exc}; check the path "
                                 "and its permissions") from None
        raise LatentgeoError(f"'{path}' is a corrupt or truncated gzip file ({exc}); download or reinstall it") from None
    finally:
        stream.close()
        fh.close()
    return out.reshape(shape).astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------------------------

_FMNIST_PREFIX = {"train": "train", "test": "t10k"}


def _find_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        p = folder / name
        if p.is_file():
            return p
    return None


def _fashion_dir_candidates(path: Optional[Union[str, os.PathLike]]) -> Tuple[Path, ...]:
    """Folders searched, in order: ``path`` if given, else ``$LATENTGEO_DATA``, else the Debian default.

    Each given folder is tried as-is and with a ``fashion-mnist/`` sub-folder, so LATENTGEO_DATA may point at a
    data root holding several data sets.
    """
    if path is not None:
        roots = [Path(path)]
    elif os.environ.get("LATENTGEO_DATA"):
        roots = [Path(os.environ["LATENTGEO_DATA"])]
    else:
        roots = [Path(DEFAULT_FASHION_MNIST_DIR)]
    out = []
    for r in roots:
        r = r.expanduser()
        out += [r, r / "fashion-mnist"]
    return tuple(out)


def fashion_mnist(
    split: str = "train",
    path: Optional[Union[str, os.PathLike]] = None,
    pad: bool = False,
    n: Optional[int] = None,
    return_labels: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Fashion-MNIST images from the IDX files ``{train,t10k}-images-idx3-ubyte[.gz]``.

    Folder: ``path`` if given, else the ``LATENTGEO_DATA`` environment variable, else
    ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``); a ``fashion-mnist/``
    sub-folder of the chosen folder is also accepted.

    ``split``: ``"train"`` (60,000 images) or ``"test"`` (10,000). ``n``: keep the first ``n`` images (file order,
    deterministic). ``pad=True`` pads 2 pixels on every side to 32x32 with the value -1, which is the background
    (pixel value 0) after scaling, so padding adds background, not grey.

    Returns ``x`` float32 ``[N, 1, 28, 28]`` (``[N, 1, 32, 32]`` with ``pad``) in [-1, 1]; with
    ``return_labels`` also the class labels ``[N]`` int64 in [0, 10).
    """
    if split not in _FMNIST_PREFIX:
        raise LatentgeoError(f"unknown split '{split}' for fashion-mnist; choose one of: train, test")
    prefix = _FMNIST_PREFIX[split]
    folders = _fashion_dir_candidates(path)
    img_file = None
    for folder in folders:
        img_file = _find_file(folder, f"{prefix}-images-idx3-ubyte")
        if img_file is not None:
            break
    if img_file is None:
        where = f"'{folders[0]}'"
        if path is None and os.environ.get("LATENTGEO_DATA"):
            where += " (from LATENTGEO_DATA)"
        raise LatentgeoError(
            f"Fashion-MNIST {split} images not found in {where} (looked for {prefix}-images-idx3-ubyte[.gz]); "
            f"install them with `{APT_HINT}` or pass --path DIR (or set LATENTGEO_DATA) to a folder holding the IDX files"
        )
    shape = idx_shape(img_file)  # the header only: the checks below come before the images are read
    if len(shape) != 3:
        raise LatentgeoError(
            f"'{img_file}' holds data of shape {shape}, expected [N, 28, 28] images; check that it is the "
            "Fashion-MNIST images file"
        )
    if shape[0] == 0:
        raise LatentgeoError(f"'{img_file}' holds 0 images; re-download the data set (`{APT_HINT}`)")
    if tuple(shape[1:]) != (28, 28):
        raise LatentgeoError(
            f"'{img_file}' holds {shape[1]}x{shape[2]} images, but Fashion-MNIST images are 28x28; check that it "
            "is the Fashion-MNIST images file or re-download it"
        )
    # The labels file, when present, must describe the same images (checked from its header even when the labels
    # are not asked for: a mismatch means the folder mixes two data sets).
    lab_file = _find_file(img_file.parent, f"{prefix}-labels-idx1-ubyte")
    if lab_file is not None:
        lab_shape = idx_shape(lab_file)
        if len(lab_shape) != 1 or lab_shape[0] != shape[0]:
            what = f"{lab_shape[0]:,} labels" if len(lab_shape) == 1 else f"data of shape {lab_shape}"
            raise LatentgeoError(
                f"'{lab_file}' has {what} for the {shape[0]:,} images of '{img_file.name}'; re-download the data set "
                f"(`{APT_HINT}`) so that both files match"
            )
    images = read_idx(img_file)
    if images.dtype != np.uint8:
        raise LatentgeoError(
            f"'{img_file}' holds {images.dtype} data, expected uint8 images; check that it is the Fashion-MNIST "
            "images file"
        )
    labels_np = None
    if return_labels:
        if lab_file is None:
            raise LatentgeoError(
                f"Fashion-MNIST {split} labels not found next to '{img_file}'; reinstall with `{APT_HINT}`"
            )
        labels_np = read_idx(lab_file)
        if labels_np.dtype != np.uint8 or (labels_np.size and int(labels_np.max()) > 9):
            raise LatentgeoError(f"'{lab_file}' holds labels outside 0..9 (Fashion-MNIST has 10 classes); "
                                 "re-download the data set")
    if n is not None:
        n = _check_take(n, images.shape[0], "fashion-mnist")
        images = images[:n]
        labels_np = labels_np[:n] if labels_np is not None else None
    x = scale_uint8(images)[:, None]
    if pad:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    if return_labels:
        return x, torch.as_tensor(labels_np.astype(np.int64))
    return x


def _check_take(n: int, available: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LatentgeoError(f"n must be a positive integer, got {n!r}; pass e.g. --n 1000")
    if n > available:
        raise LatentgeoError(f"asked for n={n} samples but {what} has only {available}; pass a smaller n")
    return n


# --------------------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------------------


def digits(
    split: str = "train",
    seed: int = 0,
    test_fraction: float = 0.2,
    n: Optional[int] = None,
    return_labels: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels with 17 grey levels (0..16), scaled to [-1, 1].

    Pixel value v in 0..16 maps to ``v / 8 - 1``. The train/test split is a random permutation drawn from
    ``seed`` (deterministic): the first ``round(test_fraction * 1797)`` permuted images are the test split
    (359 at the default 0.2), the rest the train split (1,438); ``split="all"`` returns all images in the
    original order. ``n`` keeps the first ``n`` images of the split.

    Returns ``x`` float32 ``[N, 1, 8, 8]`` in [-1, 1]; with ``return_labels`` also labels ``[N]`` int64 in [0, 10).
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise LatentgeoError(f"unknown split '{split}' for digits; choose one of: train, test, all")
    if not 0.0 < float(test_fraction) < 1.0:
        raise LatentgeoError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}; pass e.g. 0.2")
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)  # [1797, 8, 8], values 0..16
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split != "all":
        g = torch.Generator()
        g.manual_seed(int(seed))
        perm = torch.randperm(images.shape[0], generator=g)
        n_test = int(round(test_fraction * images.shape[0]))
        idx = perm[:n_test] if split == "test" else perm[n_test:]
        images, labels = images[idx], labels[idx]
    if n is not None:
        n = _check_take(n, images.shape[0], f"digits/{split}")
        images, labels = images[:n], labels[:n]
    x = (images / 8.0 - 1.0)[:, None].contiguous()
    return (x, labels) if return_labels else x


# --------------------------------------------------------------------------------------------------------------
# User arrays and PNG folders
# --------------------------------------------------------------------------------------------------------------


def _validate(x: torch.Tensor, source: str) -> torch.Tensor:
    if x.numel() == 0:
        raise LatentgeoError(f"{source} is empty (shape {tuple(x.shape)}); pass a file with at least one sample")
    if x.ndim not in (2, 3, 4):
        raise LatentgeoError(
            f"{source} has {x.ndim} dimensions (shape {tuple(x.shape)}) but 2 [N, D], 3 [N, H, W] or 4 [N, C, H, W] "
            "were expected; reshape it (a single sample needs a leading batch axis of size 1)"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise LatentgeoError(f"{source} contains {bad} NaN or inf values; clean or drop those samples first")
    return x


def _read_npy_or_npz(fh, path: Path, suffix: str, key: Optional[str]) -> np.ndarray:
    if suffix == ".npy":
        return np.load(fh, allow_pickle=False)
    with np.load(fh, allow_pickle=False) as z:
        names = list(z.files)
        if not names:
            raise LatentgeoError(f"'{path}' holds no arrays; save at least one array into it")
        if key is not None:
            if key not in names:
                raise LatentgeoError(f"'{path}' has no array '{key}'; choose one of: {', '.join(names)}")
            name = key
        else:
            name = "x" if "x" in names else names[0]
        return z[name]


def load_array(
    path: Union[str, os.PathLike],
    key: Optional[str] = None,
    scale: str = "auto",
) -> torch.Tensor:
    """Load a ``.npy`` or ``.npz`` array as float32 (never unpickles: object arrays are refused).

    ``.npz``: the array named ``key`` if given, else the one named ``x`` if present, else the first one stored.

    Layout: ``[N, D]`` (vectors) and ``[N, C, H, W]`` (images) are returned as is; ``[N, H, W]`` gets a channel
    axis -> ``[N, 1, H, W]``; ``[N, H, W, C]`` with C in {1, 3, 4} and H, W > 4 is transposed to
    ``[N, C, H, W]``. Other ranks are an error.

    ``scale``: ``"auto"`` maps uint8 arrays from [0, 255] to [-1, 1] and leaves other dtypes as they are
    (already in the user's units); ``"uint8"`` always applies ``v / 127.5 - 1``; ``"unit"`` maps [0, 1] to
    [-1, 1] (``2 v - 1``); ``"none"`` never rescales.
    """
    path = Path(path).expanduser()
    if scale not in ("auto", "uint8", "unit", "none"):
        raise LatentgeoError(f"unknown scale '{scale}'; choose one of: auto, uint8, unit, none")
    if not path.exists():
        raise LatentgeoError(f"no such file '{path}'; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise LatentgeoError(f"'{path}' is not a .npy or .npz file; convert it with numpy.save / numpy.savez")
    try:
        # Open the file ourselves: np.load(path) leaks the handle when the zip is corrupt.
        with open(path, "rb") as fh:
            arr = _read_npy_or_npz(fh, path, suffix, key)
    except LatentgeoError:
        raise
    except IsADirectoryError:
        raise LatentgeoError(f"'{path}' is a folder, not a .npy/.npz file; pass the file itself") from None
    except ValueError as exc:
        # numpy raises ValueError for object arrays (pickles) and for malformed headers.
        msg = "holds Python objects (pickled)" if "pickle" in str(exc).lower() else f"is corrupt ({exc})"
        raise LatentgeoError(f"'{path}' {msg}; save a plain numeric array with numpy.save") from None
    except Exception as exc:  # OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, ...
        raise LatentgeoError(f"'{path}' is unreadable or corrupt ({type(exc).__name__}); re-create it with numpy.save") from None
    if arr.dtype.kind not in "biuf":
        raise LatentgeoError(f"'{path}' has dtype {arr.dtype}, not numeric; save a numeric (int/float) array")
    was_uint8 = arr.dtype == np.uint8
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    x = torch.as_tensor(arr if arr.flags.c_contiguous else arr.copy(order="C"))
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4) and min(x.shape[1:3]) > 4:
        x = x.permute(0, 3, 1, 2)
    if x.ndim == 3:
        x = x[:, None]
    x = x.to(torch.float64) if x.is_floating_point() else x
    _validate(x, f"'{path}'")
    if scale == "uint8" or (scale == "auto" and was_uint8):
        x = x.to(torch.float32) / 127.5 - 1.0
    elif scale == "unit":
        x = x.to(torch.float32) * 2.0 - 1.0
    x = x.to(torch.float32).contiguous()
    # float64 values beyond the float32 range become inf when cast; catch them here.
    return _validate(x, f"'{path}' (after conversion to float32)")


def load_png_folder(path: Union[str, os.PathLike], n: Optional[int] = None) -> torch.Tensor:
    """Load every ``*.png`` in a folder (sorted by file name, not recursive) as ``[N, C, H, W]`` in [-1, 1].

    All images must share one size. If every image is greyscale C = 1; otherwise all are converted to RGB
    (C = 3; an alpha channel is dropped). 8-bit values v map to ``v / 127.5 - 1`` (16-bit PNGs are reduced to
    8 bits by Pillow's conversion). ``n`` keeps the first ``n`` files.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise LatentgeoError(f"'{folder}' is not a folder; pass a folder holding .png files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise LatentgeoError(f"'{folder}' holds no .png files; pass a folder of PNG images")
    if n is not None:
        files = files[: _check_take(n, len(files), f"'{folder}'")]
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise LatentgeoError(f"'{f}' is not a readable PNG ({type(exc).__name__}); delete or re-export it") from None
    grey = all(im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") for im in images)
    mode = "L" if grey else "RGB"
    arrays = []
    size = images[0].size
    for f, im in zip(files, images):
        if im.size != size:
            raise LatentgeoError(
                f"'{f}' is {im.size[0]}x{im.size[1]} but '{files[0].name}' is {size[0]}x{size[1]}; "
                "resize all PNGs to one size"
            )
        if im.mode.startswith("I;16") or im.mode == "I":
            a = (np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        else:
            a = np.asarray(im.convert(mode), dtype=np.uint8)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 1 if grey else 3, axis=2)
        arrays.append(a)
    stack = np.stack(arrays).transpose(0, 3, 1, 2)  # [N, C, H, W]
    return scale_uint8(np.ascontiguousarray(stack)).contiguous()
