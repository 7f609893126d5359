"""`latentgeo data ...` run as a subprocess: output fields, exit code 2 and one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import latentgeo.data as D

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def _run(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("LATENTGEO_DATA", "LATENTGEO_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(env_extra or {})
    return subprocess.run([PY, "-m", "latentgeo", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def _write_fashion_images(folder, n):
    """A tiny Fashion-MNIST-style train-images IDX file (gzip), written by hand: magic 0x00000803, dims [n, 28, 28]."""
    import gzip
    import struct

    imgs = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", n, 28, 28) + imgs.tobytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))


def _fields(stdout):
    out = {}
    for line in stdout.splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def test_data_list():
    r = _run("data", "list")
    assert r.returncode == 0, r.stderr
    for name in D.DATASETS:
        assert any(line.split()[0] == name for line in r.stdout.splitlines())


def test_data_check_digits_matches_library():
    r = _run("data", "check", "digits", "--split", "test", "--seed", "3")
    assert r.returncode == 0, r.stderr
    f = _fields(r.stdout)
    x = D.load("digits", split="test", seed=3)
    assert f["size"] == str(x.shape[0]) and f["shape"] == str(tuple(x.shape)) and f["dtype"] == "float32"
    assert f["range"] == "[-1, 1]"
    assert f["hash"].split()[0] == D.content_hash(x)
    assert float(f["mean"]) == pytest.approx(float(x.double().mean()), rel=1e-5)


def test_data_check_synthetic_and_fashion_path(tmp_path):
    r = _run("data", "check", "ripple", "--n", "64", "--seed", "5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    x = D.load("ripple", n=64, seed=5)
    assert info["hash"] == D.content_hash(x) and info["shape"] == [64, 3] and info["image"] is False
    assert info["max"] == pytest.approx(float(x.max()))
    # Fashion-MNIST from a generated folder, via --path and via LATENTGEO_DATA, padded.
    _write_fashion_images(tmp_path, n=4)
    r = _run("data", "check", "fashion-mnist", "--path", str(tmp_path), "--pad")
    assert r.returncode == 0, r.stderr
    assert _fields(r.stdout)["shape"] == "(4, 1, 32, 32)"
    r = _run("data", "check", "fashion-mnist", env_extra={"LATENTGEO_DATA": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert _fields(r.stdout)["shape"] == "(4, 1, 28, 28)"


def _bad_files(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    np.save(tmp_path / "inf.npy", np.array([[np.inf, 0.0]]))
    np.save(tmp_path / "rank1.npy", np.arange(3.0))
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    _forged_idx(tmp_path)


def _forged_idx(tmp_path):
    """Issue 21: Fashion-MNIST folders with 0 images, 1x1 images, 7 labels for 100 images, and a gzip file whose
    header asks for 10 million images (7.8 GB) while it holds 1,000."""
    import gzip
    import struct

    def idx(shape, extra=b""):
        n = int(np.prod(shape))
        return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + bytes(n) + extra

    for name, files in (("idx_zero", {"train-images-idx3-ubyte.gz": idx((0, 28, 28))}),
                        ("idx_tiny", {"train-images-idx3-ubyte.gz": idx((100, 1, 1))}),
                        ("idx_labels", {"train-images-idx3-ubyte.gz": idx((100, 28, 28)),
                                        "train-labels-idx1-ubyte.gz": idx((7,))})):
        (tmp_path / name).mkdir()
        for f, data in files.items():
            (tmp_path / name / f).write_bytes(gzip.compress(data))
    (tmp_path / "idx_forged").mkdir()
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10_000_000, 28, 28)
    (tmp_path / "idx_forged" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + bytes(28 * 28 * 1000)))


def _check_one_line_error(code, stderr, needle):
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "; " in lines[0], f"no fix part: {lines[0]}"  # error: <problem>; <fix>
    assert needle in lines[0]
    assert "Traceback" not in stderr


# A real process for each kind of failure the issue lists (missing data set, NaN/inf, wrong rank, empty array,
# unknown name, corrupt file); the remaining variants go through the same entry point in-process (cheaper).
@pytest.mark.parametrize("args,needles", [
    (["fashion-mnist", "--path", "{tmp}/nothing"], ["sudo apt-get install -y dataset-fashion-mnist", "--path"]),
    (["{tmp}/nan.npy"], ["NaN or inf"]),
    (["{tmp}/rank1.npy"], ["1 dimensions", "reshape"]),
    (["{tmp}/empty.npy"], ["empty"]),
    (["{tmp}/corrupt.npz"], ["corrupt"]),
    (["nosuchset"], ["unknown data set 'nosuchset'", "latentgeo data list"]),
    (["fashion-mnist", "--path", "{tmp}/idx_forged"], ["whose IDX header promises 7,840,000,016 bytes",
                                                      "more than gzip can hold"]),
])
def test_data_check_errors_subprocess(tmp_path, args, needles):
    _bad_files(tmp_path)
    r = _run("data", "check", *[a.format(tmp=tmp_path) for a in args])
    for needle in needles:
        _check_one_line_error(r.returncode, r.stderr, needle)


@pytest.mark.parametrize("args,needle", [
    (["{tmp}/inf.npy"], "NaN or inf"),
    (["{tmp}/corrupt.npy"], "corrupt"),
    (["{tmp}/pngs"], "not a readable PNG"),
    (["{tmp}/missing.npy"], "no such file"),
    (["moons", "--split", "valid"], "unknown split"),
    (["moons", "--n", "0"], "--n must be >= 1"),
    (["digits", "--pad"], "drop --pad"),
    (["fashion-mnist", "--path", "{tmp}/idx_zero"], "holds 0 images; re-download the data set"),
    (["fashion-mnist", "--path", "{tmp}/idx_tiny"], "holds 1x1 images, but Fashion-MNIST images are 28x28"),
    (["fashion-mnist", "--path", "{tmp}/idx_labels"], "has 7 labels for the 100 images"),
    (["fashion-mnist", "--path", "{tmp}/idx_forged"], "more than gzip can hold (forged or corrupt); re-download"),
])
def test_data_check_errors_in_process(tmp_path, capsys, monkeypatch, args, needle):
    from latentgeo.cli import main

    monkeypatch.delenv("LATENTGEO_DEBUG", raising=False)
    _bad_files(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["data", "check", *[a.format(tmp=tmp_path) for a in args]])
    _check_one_line_error(info.value.code, capsys.readouterr().err, needle)
