"""Checkpoint round trips (bit-exact), corrupt/truncated files, atomic writes, nested training state."""
import json
import os

import numpy as np
import pytest
import torch

import latentgeo
from latentgeo.checkpoint import load, load_state, register_module, save, save_state
from latentgeo.errors import LatentgeoError


@register_module
class _TinyNet(torch.nn.Module):
    def __init__(self, dim: int = 3, hidden: int = 5, act: str = "silu"):
        super().__init__()
        self.lin1 = torch.nn.Linear(dim, hidden)
        self.lin2 = torch.nn.Linear(hidden, dim)
        self.register_buffer("scale", torch.tensor(2.5, dtype=torch.float64))
        self.act = act


def test_round_trip_bit_exact(tmp_path):
    torch.manual_seed(0)
    net = _TinyNet(dim=4, hidden=7)
    path = save(net, tmp_path / "net", extra={"sigma_data": 0.5})
    assert path.suffix == ".safetensors" and path.exists()
    assert (tmp_path / "net.json").exists()
    meta = json.loads((tmp_path / "net.json").read_text())
    assert meta["config"] == {"dim": 4, "hidden": 7, "act": "silu"}
    assert meta["versions"]["torch"] == torch.__version__
    net2, meta2 = load(path, with_meta=True)
    assert isinstance(net2, _TinyNet) and net2.lin1.in_features == 4
    assert meta2["extra"]["sigma_data"] == 0.5
    for (k, a), (k2, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    x = torch.randn(3, 4)
    assert torch.equal(net.lin2(net.lin1(x)), net2.lin2(net2.lin1(x)))


def test_public_api_exposes_save_load():
    assert latentgeo.save is save and latentgeo.load is load


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.95])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, cut):
    path = save(_TinyNet(), tmp_path / "net.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(LatentgeoError, match="corrupt or truncated"):
        load(path)


def test_garbage_and_missing_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(LatentgeoError, match="corrupt or truncated"):
        load(bad)
    with pytest.raises(LatentgeoError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(LatentgeoError, match="not a latentgeo checkpoint"):
        load(tmp_path / "foreign.safetensors")


def test_overwrite_is_atomic_and_failure_keeps_old_file(tmp_path, monkeypatch):
    net = _TinyNet()
    path = save(net, tmp_path / "net.safetensors")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save(_TinyNet(hidden=9), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the saved checkpoint survived the failed write
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_state_round_trip_bit_exact(tmp_path):
    net = _TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.lin1.weight.sum().backward()
    opt.step()
    rng = np.random.default_rng(3)
    state = {
        "step": 17,
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
        "history": [1.5, float("nan"), float("inf")],
        "pair": (1, "a"),
    }
    save_state(tmp_path / "state.safetensors", state)
    back = load_state(tmp_path / "state.safetensors")
    assert back["step"] == 17 and back["pair"] == (1, "a")
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["numpy_rng"] == state["numpy_rng"]
    assert np.isnan(back["history"][1]) and back["history"][2] == float("inf")
    opt2 = torch.optim.Adam(_TinyNet().parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"].items():
        for name, t in v.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(opt2.state_dict()["state"][k][name]))
    with pytest.raises(LatentgeoError, match="not a training-state"):
        load_state(save(net, tmp_path / "model"))
