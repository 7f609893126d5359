"""Image and file loaders: IDX parsing on generated files, Fashion-MNIST folder logic, digits, npy/npz, PNG."""
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import latentgeo.data as D
from latentgeo.errors import LatentgeoError


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
            np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def _write_fashion(folder: Path, n=5, gz=True, split="train", seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", imgs), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = _idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return imgs, labels


# ----------------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 5).astype(dtype) if np.dtype(dtype) != np.uint8 \
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = _idx_bytes(arr)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    out = D.read_idx(p)
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(6)
    p = tmp_path / "labels-without-gz-suffix"
    p.write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(D.read_idx(p), arr)


def test_read_idx_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = _idx_bytes(arr)
    cases = {
        "trunc": (good[:-3], "truncated"),
        "extra": (good + b"\x00", "truncated or corrupt"),
        "header": (good[:9], "truncated"),
        "magic": (b"\x12\x34" + good[2:], "not an IDX"),
        "badgz": (gzip.compress(good)[:-12], "corrupt or truncated gzip"),
        "empty": (b"", "not an IDX"),
    }
    for name, (data, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(LatentgeoError, match=match):
            D.read_idx(p)
    with pytest.raises(LatentgeoError, match="folder"):
        D.read_idx(tmp_path)


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_generated_idx(tmp_path, gz):
    imgs, labels = _write_fashion(tmp_path, n=5, gz=gz)
    x, y = D.fashion_mnist("train", path=tmp_path, return_labels=True)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    np.testing.assert_allclose(x[:, 0].numpy(), imgs / 127.5 - 1.0, atol=1e-6)
    assert y.dtype == torch.int64 and torch.equal(y, torch.as_tensor(labels, dtype=torch.int64))


def test_fashion_mnist_pad_n_and_split(tmp_path):
    imgs, _ = _write_fashion(tmp_path, n=6)
    test_imgs, _ = _write_fashion(tmp_path, n=3, split="test", seed=1)
    x = D.fashion_mnist("train", path=tmp_path, pad=True, n=4)
    assert x.shape == (4, 1, 32, 32)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, 0][:, border] == -1.0).all()  # padding is background (-1), not 0
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30].numpy(), imgs[:4] / 127.5 - 1.0, atol=1e-6)
    xt = D.fashion_mnist("test", path=tmp_path)
    np.testing.assert_allclose(xt[:, 0].numpy(), test_imgs / 127.5 - 1.0, atol=1e-6)
    with pytest.raises(LatentgeoError, match="only 6"):
        D.fashion_mnist("train", path=tmp_path, n=7)
    with pytest.raises(LatentgeoError, match="split"):
        D.fashion_mnist("valid", path=tmp_path)


def test_fashion_mnist_env_var_and_subfolder(tmp_path, monkeypatch):
    imgs, _ = _write_fashion(tmp_path / "root" / "fashion-mnist", n=2)
    monkeypatch.setenv("LATENTGEO_DATA", str(tmp_path / "root"))
    x = D.fashion_mnist()
    np.testing.assert_allclose(x[:, 0].numpy(), imgs / 127.5 - 1.0, atol=1e-6)
    # The explicit path wins over the environment variable.
    other, _ = _write_fashion(tmp_path / "other", n=3, seed=9)
    assert D.fashion_mnist(path=tmp_path / "other").shape[0] == 3
    # load() passes path through as well.
    assert torch.equal(D.load("fashion-mnist", path=tmp_path / "other"), D.fashion_mnist(path=tmp_path / "other"))


def test_fashion_mnist_missing_names_apt_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTGEO_DATA", str(tmp_path / "empty"))
    with pytest.raises(LatentgeoError) as info:
        D.fashion_mnist()
    msg = str(info.value)
    assert "sudo apt-get install -y dataset-fashion-mnist" in msg and "--path" in msg and "\n" not in msg
    assert str(tmp_path / "empty") in msg and "LATENTGEO_DATA" in msg


def test_fashion_mnist_corrupt_file(tmp_path):
    _write_fashion(tmp_path, n=3)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(LatentgeoError, match="corrupt"):
        D.fashion_mnist(path=tmp_path)


@pytest.mark.skipif(not os.path.exists(os.path.join(D.DEFAULT_FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")),
                    reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_installed_test_split(monkeypatch):
    monkeypatch.delenv("LATENTGEO_DATA", raising=False)
    x, y = D.fashion_mnist("test", return_labels=True)
    assert x.shape == (10_000, 1, 28, 28) and x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))


# ------------------------------------------------------------------------------------------------------ digits


def test_digits_split_shapes_range_and_partition():
    from sklearn.datasets import load_digits

    tr, ytr = D.digits("train", seed=0, return_labels=True)
    te, yte = D.digits("test", seed=0, return_labels=True)
    al = D.digits("all")
    assert tr.shape == (1438, 1, 8, 8) and te.shape == (359, 1, 8, 8) and al.shape == (1797, 1, 8, 8)
    assert tr.dtype == torch.float32 and tr.min() == -1.0 and tr.max() == 1.0
    # Values are the 17 grey levels v/8 - 1, v = 0..16.
    levels = (al + 1) * 8
    assert torch.equal(levels, levels.round()) and levels.min() == 0 and levels.max() == 16
    raw = load_digits()
    np.testing.assert_allclose(al[:, 0].numpy(), raw.images / 8.0 - 1.0, atol=1e-7)
    # train and test are disjoint and together are the whole set (as multisets of (image, label) rows).
    rows = lambda x, y: sorted(a.tobytes() + bytes([int(b)]) for a, b in zip(x.numpy(), y.numpy()))
    assert rows(torch.cat([tr, te]), torch.cat([ytr, yte])) == rows(al, torch.as_tensor(raw.target))
    assert torch.equal(D.digits("train", seed=0), tr)
    assert not torch.equal(D.digits("train", seed=1), tr)
    assert D.digits("test", n=10).shape == (10, 1, 8, 8)
    with pytest.raises(LatentgeoError, match="split"):
        D.digits("val")


# -------------------------------------------------------------------------------------------------- npy / npz


def test_load_array_npy_npz_layouts(tmp_path):
    a = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float64)
    np.save(tmp_path / "a.npy", a)
    x = D.load_array(tmp_path / "a.npy")
    assert x.dtype == torch.float32 and x.shape == (7, 3)
    np.testing.assert_allclose(x.numpy(), a, rtol=1e-6)

    u8 = np.random.default_rng(1).integers(0, 256, size=(4, 6, 5), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", labels=np.arange(4), x=u8)
    x = D.load_array(tmp_path / "b.npz")  # picks 'x'
    assert x.shape == (4, 1, 6, 5)
    np.testing.assert_allclose(x[:, 0].numpy(), u8 / 127.5 - 1, atol=1e-6)
    with pytest.raises(LatentgeoError, match="1 dimensions"):
        D.load_array(tmp_path / "b.npz", key="labels")
    np.savez(tmp_path / "c.npz", first=a, second=a[:2])
    assert D.load_array(tmp_path / "c.npz").shape == (7, 3)  # no 'x': the first array
    assert D.load_array(tmp_path / "c.npz", key="second").shape == (2, 3)
    with pytest.raises(LatentgeoError, match="no array 'zzz'"):
        D.load_array(tmp_path / "c.npz", key="zzz")

    nhwc = np.random.default_rng(2).integers(0, 256, size=(3, 9, 10, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc)
    x = D.load_array(tmp_path / "nhwc.npy")
    assert x.shape == (3, 3, 9, 10)
    np.testing.assert_allclose(x.numpy(), nhwc.transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)

    unit = np.random.default_rng(3).random((2, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "unit.npy", unit)
    np.testing.assert_allclose(D.load_array(tmp_path / "unit.npy", scale="unit").numpy(), 2 * unit - 1, atol=1e-6)
    np.testing.assert_array_equal(D.load_array(tmp_path / "unit.npy").numpy(), unit)  # auto: floats untouched


@pytest.mark.parametrize("make,match", [
    (lambda p: np.save(p, np.array([[1.0, np.nan]])), "NaN or inf"),
    (lambda p: np.save(p, np.array([[1.0, np.inf], [0, 0]])), "NaN or inf"),
    (lambda p: np.save(p, np.array([[1e300, 0.0]])), "NaN or inf"),  # overflows float32
    (lambda p: np.save(p, np.arange(5.0)), "1 dimensions"),
    (lambda p: np.save(p, np.zeros((2, 2, 2, 2, 2))), "5 dimensions"),
    (lambda p: np.save(p, np.zeros((0, 3))), "empty"),
    (lambda p: np.save(p, np.array(3.0)), "0 dimensions"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled"),
    (lambda p: np.save(p, np.array([["a", "b"]])), "not numeric"),
    (lambda p: Path(p).write_bytes(b"\x93NUMPY garbage garbage"), "corrupt"),
    (lambda p: Path(p).write_bytes(b""), "corrupt"),
])
def test_load_array_errors_npy(tmp_path, make, match):
    p = tmp_path / "bad.npy"
    make(p)
    with pytest.raises(LatentgeoError, match=match) as info:
        D.load_array(p)
    assert "\n" not in str(info.value)


def test_load_array_errors_npz_and_paths(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LatentgeoError, match="corrupt"):
        D.load_array(tmp_path / "bad.npz")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(LatentgeoError, match="no arrays"):
        D.load_array(tmp_path / "none.npz")
    with pytest.raises(LatentgeoError, match="no such file"):
        D.load_array(tmp_path / "missing.npy")
    (tmp_path / "a.txt").write_text("1 2 3")
    with pytest.raises(LatentgeoError, match=".npy or .npz"):
        D.load_array(tmp_path / "a.txt")


# ------------------------------------------------------------------------------------------------------- PNG


def test_png_folder_grey_and_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(3, 6, 7), dtype=np.uint8)
    for i, g in enumerate(grey):
        Image.fromarray(g, mode="L").save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    x = D.load_png_folder(tmp_path)
    assert x.shape == (3, 1, 6, 7) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), grey / 127.5 - 1, atol=1e-6)
    assert torch.equal(D.load(str(tmp_path)), x)
    assert D.load_png_folder(tmp_path, n=2).shape[0] == 2

    rgb_dir = tmp_path / "rgb"
    rgb_dir.mkdir()
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(rgb_dir / "b.png")
    Image.fromarray(grey[0], mode="L").save(rgb_dir / "a.png")
    x = D.load_png_folder(rgb_dir)  # mixed: everything becomes RGB
    assert x.shape == (2, 3, 6, 7)
    np.testing.assert_allclose(x[1].numpy(), rgb.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(x[0].numpy(), np.broadcast_to(grey[0], (3, 6, 7)) / 127.5 - 1, atol=1e-6)


def test_png_folder_errors(tmp_path):
    from PIL import Image

    with pytest.raises(LatentgeoError, match="no .png files"):
        D.load_png_folder(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(LatentgeoError, match="one size"):
        D.load_png_folder(tmp_path)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(LatentgeoError, match="not a readable PNG"):
        D.load_png_folder(tmp_path)
    with pytest.raises(LatentgeoError, match="not a folder"):
        D.load_png_folder(tmp_path / "a.png")


# ----------------------------------------------------------------------------------- issue 21: forged IDX headers


def test_read_idx_checks_the_header_before_reading_the_data(tmp_path):
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10_000_000, 28, 28)  # promises 7.8 GB
    gz = tmp_path / "forged.gz"
    gz.write_bytes(gzip.compress(head + bytes(28 * 28 * 1000)))
    with pytest.raises(LatentgeoError, match=r"gzip file of [\d,]+ bytes whose IDX header promises 7,840,000,016 "
                                             r"bytes .*more than gzip can hold"):
        D.read_idx(gz)
    raw = tmp_path / "forged.idx"
    raw.write_bytes(head + bytes(28 * 28 * 10))
    with pytest.raises(LatentgeoError, match="header promises 7840000016"):
        D.read_idx(raw)
    # within what gzip could hold, but the stream ends early: truncated, read only as far as it goes
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 50, 28, 28) + bytes(28 * 28 * 10)))
    with pytest.raises(LatentgeoError, match="truncated or corrupt IDX file .* after decompression"):
        D.read_idx(short)
    # the header alone (no data read): idx_shape
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(_idx_bytes(np.zeros((3, 28, 28), np.uint8))))
    assert D.idx_shape(good) == (3, 28, 28)
    for p in (gz, raw):
        with pytest.raises(LatentgeoError):
            D.idx_shape(p)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_refuses_empty_tiny_and_mismatched_files(tmp_path, gz):
    def write(folder, stem, arr):
        folder.mkdir(exist_ok=True)
        data = _idx_bytes(arr)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)

    write(tmp_path / "zero", "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    write(tmp_path / "tiny", "train-images-idx3-ubyte", np.zeros((100, 1, 1), np.uint8))
    write(tmp_path / "lab", "train-images-idx3-ubyte", np.zeros((100, 28, 28), np.uint8))
    write(tmp_path / "lab", "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    write(tmp_path / "cls", "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write(tmp_path / "cls", "train-labels-idx1-ubyte", np.array([3, 200], np.uint8))
    for folder, kw, match in (("zero", {}, "holds 0 images; re-download"),
                              ("tiny", {}, "holds 1x1 images, but Fashion-MNIST images are 28x28"),
                              ("lab", {}, "has 7 labels for the 100 images"),  # even when labels are not asked for
                              ("lab", {"return_labels": True}, "has 7 labels for the 100 images"),
                              ("cls", {"return_labels": True}, "labels outside 0..9")):
        with pytest.raises(LatentgeoError, match=match) as e:
            D.fashion_mnist("train", path=tmp_path / folder, **kw)
        assert "\n" not in str(e.value) and "; " in str(e.value)
    assert D.fashion_mnist("train", path=tmp_path / "cls").shape == (2, 1, 28, 28)  # labels not asked for
