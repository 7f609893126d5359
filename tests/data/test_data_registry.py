"""load() by name and path, DATASETS, is_image, describe/content_hash."""
import hashlib

import numpy as np
import pytest
import torch

import latentgeo.data as D
from latentgeo.errors import LatentgeoError

SYNTHETIC = {"gmm": 10, "gmm2d": 2, "embedded": 16, "anisotropic": 2, "ripple": 3, "moons": 2, "rings": 2,
             "checkerboard": 2}


@pytest.mark.parametrize("name,dim", SYNTHETIC.items())
def test_load_synthetic_names(name, dim):
    x = D.load(name, n=50, seed=1)
    assert x.shape == (50, dim) and x.dtype == torch.float32 and not D.is_image(x)
    assert torch.equal(x, D.load(name, n=50, seed=1))
    test = D.load(name, split="test", n=50, seed=1)
    assert not torch.equal(x, test)  # independent stream
    assert torch.equal(test, D.load(name, n=50, seed=D.split_seed(1, "test")))
    assert name in D.DATASETS


def test_load_defaults_and_options():
    assert D.load("moons").shape == (D.DEFAULT_N, 2)
    assert D.load("gmm", n=20, dim=32).shape == (20, 32)
    x = D.load("anisotropic", n=20, seed=3, delta0=0.2)
    assert torch.equal(x, D.anisotropic_gaussian(20, 0.2, seed=3))
    assert torch.equal(D.load("gmm2d", n=30, seed=2), D.gaussian_mixture_subspace(30, dim=2, seed=2))
    with pytest.raises(LatentgeoError, match="bad option"):
        D.load("moons", n=5, nonsense=1)


def test_load_digits_and_aliases():
    x = D.load("digits")
    assert D.is_image(x) and x.shape == (1438, 1, 8, 8)
    assert torch.equal(D.load("digits", split="test", seed=2), D.digits("test", seed=2))
    assert D.load("digits", n=7).shape[0] == 7
    with pytest.raises(LatentgeoError, match="pad turns 28x28"):
        D.load("digits", pad=True)


def test_load_paths(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    assert torch.equal(D.load(str(tmp_path / "a.npy")), torch.as_tensor(a))
    assert D.load(tmp_path / "a.npy", n=2).shape == (2, 3)
    img = np.zeros((2, 28, 28), np.uint8)
    np.save(tmp_path / "img.npy", img)
    padded = D.load(str(tmp_path / "img.npy"), pad=True)
    assert padded.shape == (2, 1, 32, 32) and (padded == -1).all()
    # A file named like a data set is still loaded as the file.
    np.save(tmp_path / "moons.npy", a)
    assert torch.equal(D.load(str(tmp_path / "moons.npy")), torch.as_tensor(a))


@pytest.mark.parametrize("arg,match", [
    ("nosuchset", "unknown data set 'nosuchset'; choose one of: digits"),
    ("./missing.npy", "no such file"),
    ("/definitely/not/here", "no such file"),
])
def test_load_unknown(arg, match):
    with pytest.raises(LatentgeoError, match=match):
        D.load(arg)


def test_load_bad_split_and_plain_file(tmp_path):
    with pytest.raises(LatentgeoError, match="unknown split"):
        D.load("moons", split="validation")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(LatentgeoError, match="neither"):
        D.load(str(tmp_path / "x.csv"))


def test_content_hash_and_describe():
    x = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float32)
    expected = hashlib.sha256(np.array([0.5, -1.0, 2.0, 3.0], dtype="<f4").tobytes()).hexdigest()[:16]
    assert D.content_hash(x) == expected
    assert D.content_hash(x.double()) == expected  # hashed as float32
    assert D.content_hash(x.T.contiguous().T) == expected  # layout-independent
    info = D.describe(x)
    assert info["size"] == 2 and info["shape"] == [2, 2] and info["dtype"] == "float32"
    assert info["min"] == -1.0 and info["max"] == 3.0 and info["mean"] == pytest.approx(1.125)
    assert info["std"] == pytest.approx(float(np.std([0.5, -1.0, 2.0, 3.0])))


def test_is_image():
    assert D.is_image(torch.zeros(2, 1, 4, 4))
    assert not D.is_image(torch.zeros(2, 4))
    assert not D.is_image([1, 2])


def test_alanine_table_via_molecules():
    pytest.importorskip("latentgeo.molecules")
    from latentgeo import molecules

    if not hasattr(molecules, "load_alanine_table"):
        pytest.skip("latentgeo.molecules.load_alanine_table not there yet")
    x = D.load("alanine")
    phi, psi, u = molecules.load_alanine_table()
    assert x.shape == (phi.size * psi.size, 3)
    # Row order: phi slowest; the energy column matches the grid.
    np.testing.assert_allclose(x[:, 2].numpy(), np.asarray(u).reshape(-1), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(x[psi.size, :2].numpy(), [phi[1], psi[0]], atol=1e-6)
    assert float(x[:, 2].min()) == 0.0


def test_alanine_missing_or_damaged_table_is_a_clear_error(monkeypatch, tmp_path):
    """The table ships with latentgeo.data (no import of latentgeo.molecules): a missing or damaged file is one
    line naming it."""
    from latentgeo.data import alanine

    monkeypatch.setattr(alanine, "_table_path", lambda: tmp_path / "missing.dat")
    with pytest.raises(LatentgeoError, match="alanine energy table not found"):
        D.load("alanine")
    bad = tmp_path / "bad.dat"
    bad.write_text("# phi psi z\n0 0 1\n0 1 nan-ish\n")
    monkeypatch.setattr(alanine, "_table_path", lambda: bad)
    with pytest.raises(LatentgeoError, match="bad.dat"):
        D.load("alanine")
