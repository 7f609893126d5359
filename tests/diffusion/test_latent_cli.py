"""`latentgeo train flow` and latent-space training (`--encoder AE_DIR`) with decoding in `latentgeo sample`."""
import json

import numpy as np
import pytest
import torch

from latentgeo.autoencoders import load_decoder, load_encoder
from latentgeo.flows import FlowModel, load_flow


def _cli(capsys, *args):
    """Run the CLI in this process; returns (exit code, stderr)."""
    from latentgeo.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def test_flow_cli_learns_a_gaussian_and_samples(tmp_path, capsys):
    m = np.array([1.0, -1.0])
    L = np.array([[0.5, 0.0], [0.3, 0.2]])
    x = (m + np.random.default_rng(0).normal(size=(6000, 2)) @ L.T).astype(np.float32)
    np.save(tmp_path / "g.npy", x)
    out = tmp_path / "flow"
    code, err = _cli(capsys, "train", "flow", "--data", tmp_path / "g.npy", "--out", out, "--steps", 400,
                     "--batch-size", 128, "--hidden", 64, "--depth", 2, "--quiet", "--device", "cpu")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["user"]
    assert cfg["kind"] == "flow" and cfg["data_shape"] == [2] and "latent_of" not in cfg
    assert isinstance(load_flow(out), FlowModel)
    code, err = _cli(capsys, "sample", out, "--n", 3000, "--steps", 20, "--out", tmp_path / "s.npz")
    assert code == 0, err
    s = np.load(tmp_path / "s.npz")
    assert set(s.files) == {"x"} and s["x"].shape == (3000, 2)
    # the CLI's flow (EMA weights, Heun) reproduces the Gaussian it was trained on
    assert np.abs(s["x"].mean(0) - m).max() < 0.06
    assert np.abs(np.cov(s["x"].T) - L @ L.T).max() < 0.06
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    # a diffusion sampler name is refused for a flow, with the choices named
    code, err = _cli(capsys, "sample", out, "--sampler", "edm_stochastic")
    assert code == 2 and "unknown flow ODE method 'edm_stochastic'" in err and "dopri5" in err


def test_latent_flow_and_latent_diffusion_decode(tmp_path, capsys):
    ae = tmp_path / "gpe"
    code, err = _cli(capsys, "train", "ae", "--method", "gpe", "--data", "gmm", "--out", ae, "--steps", 40,
                     "--latent-dim", 2, "--n", 400, "--n-val", 100, "--quiet")
    assert code == 0, err
    enc = load_encoder(ae)
    flow = tmp_path / "latent-flow"
    code, err = _cli(capsys, "train", "flow", "--encoder", ae, "--out", flow, "--steps", 30, "--n", 400,
                     "--hidden", 16, "--depth", 1, "--batch-size", 64, "--quiet", "--device", "cpu")
    assert code == 0, err
    cfg = json.loads((flow / "config.json").read_text())["user"]
    assert cfg["data"] == "gmm" and cfg["data_shape"] == [2] and cfg["decoded_shape"] == list(enc.in_shape)
    code, err = _cli(capsys, "sample", flow, "--n", 16, "--steps", 4)
    assert code == 0, err
    s = np.load(flow / "samples.npz")
    assert s["z"].shape == (16, 2) and s["x"].shape == (16, 10)
    # the images/vectors written are exactly the decoder applied to the sampled latents
    with torch.no_grad():
        xd = load_decoder(ae)(torch.as_tensor(s["z"]))
    assert np.allclose(s["x"], xd.numpy(), atol=1e-6)
    # the same for an EDM denoiser trained in the latent space
    den = tmp_path / "latent-diffusion"
    code, err = _cli(capsys, "train", "diffusion", "--encoder", ae, "--out", den, "--steps", 20, "--n", 400,
                     "--hidden", 16, "--depth", 1, "--batch-size", 64, "--quiet", "--device", "cpu")
    assert code == 0, err
    code, err = _cli(capsys, "sample", den, "--n", 8, "--steps", 4, "--out", tmp_path / "d.npz")
    assert code == 0, err
    d = np.load(tmp_path / "d.npz")
    assert d["z"].shape == (8, 2) and d["x"].shape == (8, 10)


def test_latent_cli_errors(tmp_path, capsys):
    code, err = _cli(capsys, "train", "flow", "--encoder", tmp_path / "nope", "--out", tmp_path / "f")
    assert code == 2 and "does not exist" in err and "train ae" in err
    code, err = _cli(capsys, "train", "flow", "--out", tmp_path / "f")
    assert code == 2 and "pass --data" in err
    code, err = _cli(capsys, "train", "flow", "--data", "gmm2d", "--out", tmp_path / "f", "--coupling", "sinkhorn")
    assert code == 2 and "unknown --coupling 'sinkhorn'" in err
