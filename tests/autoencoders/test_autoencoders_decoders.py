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
