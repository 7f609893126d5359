"""The package-trained feature classifier, its cached file, the classifier Frechet distance and user-FID."""
import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.metrics import (TorchScriptFeatures, classifier_frechet_distance, fid, frechet_distance_samples,
                               load_or_fit_classifier)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # [-1, 1]
    return x, torch.tensor(d.target)


def test_classifier_learns_and_caches(digits, tmp_path):
    torch.set_num_threads(1)
    x, y = digits
    xtr, ytr, xte = x[:1400], y[:1400], x[1400:]
    clf, info = load_or_fit_classifier(tmp_path, xtr, ytr, steps=250, seed=0)
    assert not info["cached"]
    assert info["val_accuracy"] > 0.85
    assert (tmp_path / "classifier.safetensors").exists()
    clf2, info2 = load_or_fit_classifier(tmp_path, xtr, ytr, steps=250, seed=0)
    assert info2["cached"]
    assert torch.allclose(clf.features(xte), clf2.features(xte))
    # different data -> not reused
    _, info3 = load_or_fit_classifier(tmp_path, xtr[:600], ytr[:600], steps=5, seed=0)
    assert not info3["cached"]

    # Held-out real digits are much closer to the training digits than blurred or noisy ones.
    real = classifier_frechet_distance(xte, xtr, clf)
    noise = classifier_frechet_distance(torch.rand_like(xte) * 2 - 1, xtr, clf)
    only_ones = classifier_frechet_distance(xtr[ytr == 1], xtr, clf)  # mode collapse onto one class
    assert real < 0.2 * noise
    assert real < 0.5 * only_ones
    with pytest.raises(LatentgeoError):
        classifier_frechet_distance(torch.zeros(10, 1, 4, 4), xtr, clf)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_torchscript_fid_equals_frechet_of_its_features(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh())
    path = tmp_path / "feat.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    with pytest.raises(LatentgeoError, match="allow_torchscript"):  # TorchScript is code: only when asked
        TorchScriptFeatures(path, input_range=(-1, 1), value_range=(-1, 1), resize=None, channels=1)
    ext = TorchScriptFeatures(path, input_range=(-1, 1), value_range=(-1, 1), resize=None, channels=1,
                              allow_torchscript=True)
    a = torch.rand(200, 1, 4, 4) * 2 - 1
    b = torch.rand(150, 1, 4, 4) * 1.5 - 1
    with torch.no_grad():
        expected = frechet_distance_samples(net(a).double(), net(b).double())
    assert fid(a, b, ext) == pytest.approx(expected, rel=1e-9)
    # the torch.export route gives the same value
    p2 = tmp_path / "feat.pt2"
    torch.export.save(torch.export.export(net, (a[:4],), dynamic_shapes=({0: torch.export.Dim("b")},)), str(p2))
    with pytest.raises(LatentgeoError, match="allow_pickle"):
        TorchScriptFeatures(p2, allow_torchscript=True)
    ext2 = TorchScriptFeatures(p2, input_range=(-1, 1), value_range=(-1, 1), resize=None, channels=1,
                               allow_pickle=True)
    assert fid(a, b, ext2) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(LatentgeoError):
        TorchScriptFeatures(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(LatentgeoError):
        TorchScriptFeatures(tmp_path / "junk.pt", allow_torchscript=True)
