"""The two conv decoders (wide default, lean selectable), bad input, and loading checkpoints written before the
``decoder`` option existed."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from latentgeo.autoencoders import ConvDecoderNet, Decoder, WideConvDecoderNet
from latentgeo.checkpoint import load, save
from latentgeo.errors import LatentgeoError


@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 32, 32], [3, 12, 16]])
def test_decoder_kinds_shapes(shape):
    torch.manual_seed(0)
    z = torch.randn(5, 6)
    wide, lean = Decoder(shape, 6), Decoder(shape, 6, decoder="lean")
    assert isinstance(wide.net, WideConvDecoderNet) and isinstance(lean.net, ConvDecoderNet)
    for d in (wide, lean):
        y = d(z)
        assert y.shape == (5, *shape) and torch.isfinite(y).all()
        y.pow(2).mean().backward()  # every parameter is used
        assert all(p.grad is not None for p in d.parameters())
    # vectors use the MLP whatever the choice
    assert type(Decoder([20], 4, decoder="lean").net) is type(Decoder([20], 4).net)


def test_decoder_bad_choice():
    with pytest.raises(LatentgeoError, match="unknown decoder 'huge'"):
        Decoder([1, 8, 8], 4, decoder="huge")


def test_wide_round_trip(tmp_path):
    torch.manual_seed(1)
    d = Decoder([1, 16, 16], 5).eval()
    save(d, tmp_path / "d.safetensors")
    d2 = load(tmp_path / "d.safetensors").eval()
    z = torch.randn(4, 5)
    assert d2.decoder == "wide" and torch.equal(d(z), d2(z))


def test_legacy_lean_checkpoint_loads(tmp_path):
    """A checkpoint whose config has no ``decoder`` key (written by the earlier code, lean net) loads strictly."""
    torch.manual_seed(2)
    d = Decoder([1, 16, 16], 5, decoder="lean").eval()
    path = tmp_path / "old.safetensors"
    save(d, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    info = json.loads(meta["latentgeo"])
    del info["config"]["decoder"]
    meta["latentgeo"] = json.dumps(info)
    save_file(load_file(str(path)), str(path), metadata=meta)
    old = load(path).eval()
    z = torch.randn(3, 5)
    assert isinstance(old.net, ConvDecoderNet) and old.decoder == "lean"
    assert torch.equal(old(z), d(z))
    # saving it again records the lean choice
    save(old, tmp_path / "again.safetensors")
    assert load(tmp_path / "again.safetensors").decoder == "lean"


def test_mlp_image_decoder_round_trip(tmp_path):
    """``decoder="mlp"``: a fully connected image decoder (2 hidden SiLU layers of 1024); saves and loads."""
    from latentgeo.autoencoders import MLPDecoderNet

    torch.manual_seed(3)
    d = Decoder([1, 8, 8], 4, decoder="mlp").eval()
    assert isinstance(d.net, MLPDecoderNet) and d.net.net[0].out_features == 1024
    assert isinstance(d.net.net[1], torch.nn.SiLU) and len([m for m in d.net.net if isinstance(m, torch.nn.Linear)]) == 3
    z = torch.randn(3, 4)
    assert d(z).shape == (3, 1, 8, 8)
    save(d, tmp_path / "m.safetensors")
    d2 = load(tmp_path / "m.safetensors").eval()
    assert d2.decoder == "mlp" and torch.equal(d(z), d2(z))
    with pytest.raises(LatentgeoError, match="unknown activation"):
        MLPDecoderNet(4, [8], act="tanh")


def test_cosine_schedule_and_its_limits(tmp_path):
    """``lr_schedule="cosine"`` anneals to 0 over the steps (the last update is ~0); an unknown schedule is refused.
    ``run_shared`` (the former second engine) is the same function as ``fit`` now, so it takes the schedule too."""
    from latentgeo.autoencoders import fit
    from latentgeo.autoencoders.training import run_shared

    torch.manual_seed(0)
    x = torch.randn(64, 3)
    lin = torch.nn.Linear(3, 1)
    def loss_fn(b, g):
        return lin(b).pow(2).mean()

    res = fit(lin, loss_fn, x, steps=10, batch_size=8, lr=0.1, lr_schedule="cosine")
    assert res["steps"] == 10
    # the learning rate actually used: re-run and record it through a hook on the optimiser step
    lrs = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.Adam.step = step
    try:
        fit(lin, loss_fn, x, steps=10, batch_size=8, lr=0.1, lr_schedule="cosine")
    finally:
        torch.optim.Adam.step = orig
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05) and lrs[-1] < 0.003
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(LatentgeoError, match="lr schedule"):
        fit(lin, loss_fn, x, steps=2, lr_schedule="step")
    assert run_shared is fit
    assert run_shared(lin, loss_fn, x, steps=2, lr_schedule="cosine")["steps"] == 2
