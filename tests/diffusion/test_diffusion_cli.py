"""`latentgeo train diffusion` / `latentgeo sample` end to end, and their user errors, via subprocess."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from latentgeo.diffusion import EDMDenoiser, load_denoiser

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "latentgeo", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def _cli_inproc(capsys, *args):
    """Run the CLI entry point in this process (no interpreter start-up); returns (exit code, stderr)."""
    from latentgeo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def test_train_resume_sample_and_load(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32) * [1.0, 2.0, 0.5]
    np.savez(tmp_path / "d.npz", x=x, other=np.zeros(3))
    out = tmp_path / "run"
    common = ["--data", str(tmp_path / "d.npz"), "--out", str(out), "--hidden", "16", "--depth", "1",
              "--batch-size", "32", "--ckpt-every", "5", "--log-every", "5", "--quiet", "--device", "cpu"]
    r = _cli("train", "diffusion", "--steps", "10", *common)
    assert r.returncode == 0, r.stderr
    code, err = _cli_inproc(capsys, "train", "diffusion", "--steps", "10", *common)  # no --resume: refused
    assert code == 2 and "--resume" in err
    code, err = _cli_inproc(capsys, "train", "diffusion", "--steps", "15", "--resume", *common)
    assert code == 0, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    den = load_denoiser(out)
    assert isinstance(den, EDMDenoiser) and not den.training
    assert abs(den.sigma_data - float(np.sqrt(((x - x.mean(0)) ** 2).mean()))) < 1e-5
    code, err = _cli_inproc(capsys, "sample", str(out), "--n", "7", "--steps", "4", "--device", "cpu")
    assert code == 0, err
    with np.load(out / "samples.npz") as f:
        s = f["x"]
    assert s.shape == (7, 3) and np.isfinite(s).all()
    # Same seed, same samples as the Python API path.
    from latentgeo.diffusion import sample
    g = torch.Generator().manual_seed(0)
    ref = sample(den, (7, 3), n_steps=4, generator=g).numpy()
    np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-5)


def test_cli_data_errors_subprocess(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]]))
    for data, needle in ((tmp_path / "missing.npy", "missing.npy"), (tmp_path / "nan.npy", "NaN")):
        r = _cli("train", "diffusion", "--data", str(data), "--steps", "2", "--out", str(tmp_path / "o"), "--quiet")
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "state.safetensors").exists()


@pytest.mark.parametrize("args,needle", [
    (["train", "diffusion", "--data", "moons", "--net", "unet", "--steps", "2"], "--net mlp"),
    (["train", "diffusion", "--data", "moons", "--net", "transformer", "--steps", "2"], "unknown net"),
    (["train", "diffusion", "--data", "moons", "--steps", "0"], "--steps"),
    (["train", "diffusion", "--data", "moons", "--lr", "-1", "--steps", "2"], "--lr"),
    (["sample", "{p}/nothing_here"], "does not exist; pass the --out folder of `latentgeo train diffusion`"),
])
def test_cli_usage_errors(tmp_path, capsys, args, needle):
    args = [a.replace("{p}", str(tmp_path)) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "o"), "--quiet"]
    code, err = _cli_inproc(capsys, *args)
    assert code == 2 and err.startswith("error: ") and needle in err, err
