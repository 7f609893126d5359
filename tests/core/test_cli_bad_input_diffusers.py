"""Forged diffusers folders (issue 21): every case is one line ``error: <problem>; <fix>``, exit 2, before any long
work -- no traceback, no silent acceptance, no flood of stderr, and the key at fault is named.

One tiny DDPM pipeline and one tiny AutoencoderKL are saved offline per module; each case copies one of them, edits
one file and runs the CLI in this process.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _diffusers_models import diffusers_or_skip, save_pipeline, tiny_unet, tiny_vae  # noqa: E402

diffusers_or_skip()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("forged_diffusers")
    save_pipeline(root / "pipe", unet=tiny_unet(in_channels=1, sample_size=8))
    vae = root / "vae"
    tiny_vae(in_channels=3).save_pretrained(vae)
    rng = np.random.default_rng(0)
    np.save(root / "gray8.npy", (rng.random((32, 1, 8, 8)) * 2 - 1).astype(np.float32))
    np.save(root / "rgb16.npy", (rng.random((32, 3, 16, 16)) * 2 - 1).astype(np.float32))
    return root


@pytest.fixture
def cli(cli_inproc):
    def run(*args):
        r = cli_inproc(*args)
        return r.returncode, r.stdout, r.stderr, r.cpu_s
    return run


def _json_edit(key, value):
    def edit(f: Path):
        cfg = json.loads(f.read_text())
        cfg[key] = value
        f.write_text(json.dumps(cfg))  # allow_nan: NaN / Infinity are written as Python's JSON reads them
    return edit


def _write(text):
    return lambda f: f.write_text(text)


def _fifo(f: Path):
    f.unlink()
    os.mkfifo(f)


def _dev_zero(f: Path):
    f.unlink()
    f.symlink_to("/dev/zero")


def _big_string(n):
    return _json_edit("junk", "x" * n)


# (case id, which folder, file inside it, edit, needle in the one error line)
UNET, SCHED = "unet/config.json", "scheduler/scheduler_config.json"
DENOISER_CASES = [
    ("nested-unet-config", UNET, _write("[" * 100000), "nests JSON"),
    ("nested-scheduler-config", SCHED, _write("[" * 100000), "nests JSON"),
    ("prediction-type-list", SCHED, _json_edit("prediction_type", ["epsilon"]), "prediction_type"),
    ("sample-size-nan", UNET, _json_edit("sample_size", float("nan")), "sample_size"),
    ("norm-eps-minus-inf", UNET, _json_edit("norm_eps", float("-inf")), "norm_eps"),
    ("norm-eps-zero", UNET, _json_edit("norm_eps", 0), "norm_eps"),
    ("trained-betas-empty", SCHED, _json_edit("trained_betas", []), "trained_betas"),
    ("beta-end-string", SCHED, _json_edit("beta_end", "0.02"), "beta_end"),
    ("config-fifo", UNET, _fifo, "not a regular file"),
    ("config-dev-zero", UNET, _dev_zero, "not a regular file"),
    ("quantization-config", UNET, _json_edit("quantization_config", {"quant_method": "bitsandbytes",
                                                                     "load_in_8bit": True}), "quantization_config"),
    ("long-string", UNET, _big_string(200_000), "implausible settings (junk)"),
    ("config-too-large", UNET, _big_string(17 * 2 ** 20), "MiB"),
]
VAE_CASES = [
    ("scaling-factor-zero", _json_edit("scaling_factor", 0), "scaling_factor"),
    ("scaling-factor-string", _json_edit("scaling_factor", "0.18"), "scaling_factor"),
    ("scaling-factor-nan", _json_edit("scaling_factor", float("nan")), "scaling_factor"),
    ("shift-factor-minus-inf", _json_edit("shift_factor", float("-inf")), "shift_factor"),
    ("latents-std-wrong-length", _json_edit("latents_std", [1.0, 1.0]), "latents_std"),
    ("quantization-config", _json_edit("quantization_config", {"quant_method": "gguf"}), "quantization_config"),
]


def _one_line(code, err, needle):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert needle in lines[0], lines[0]
    assert "; " in lines[0], f"no fix part: {lines[0]}"
    assert len(err) < 2000, f"stderr flooded ({len(err)} characters)"
    return lines[0]


@pytest.mark.parametrize("case", DENOISER_CASES, ids=[c[0] for c in DENOISER_CASES])
def test_forged_pipeline_is_one_line(base, tmp_path, cli, case):
    name, rel, edit, needle = case
    forged = tmp_path / "pipe"
    shutil.copytree(base / "pipe", forged)
    edit(forged / rel)
    code, out, err, cpu = cli("fisher", "curves", "--denoiser", forged, "--data", base / "gray8.npy", "--out",
                              tmp_path / "out", "--n", 8, "--probes", 1, "--n-sigmas", 2, "--device", "cpu")
    _one_line(code, err, needle)
    assert cpu < 10, cpu
    assert not (tmp_path / "out" / "curves.json").exists()


@pytest.mark.parametrize("case", VAE_CASES, ids=[c[0] for c in VAE_CASES])
def test_forged_vae_is_one_line(base, tmp_path, cli, case):
    name, edit, needle = case
    forged = tmp_path / "vae"
    shutil.copytree(base / "vae", forged)
    edit(forged / "config.json")
    code, out, err, cpu = cli("geometry", forged, "--data", base / "rgb16.npy", "--plots", tmp_path / "gm",
                              "--device", "cpu")
    _one_line(code, err, needle)
    assert cpu < 10, cpu


def test_a_decoder_that_does_not_fit_the_latents_is_refused_before_sampling(base, tmp_path, cli):
    """A latent run on 2-D latents, sampled with --autoencoder a VAE whose decoder takes [4, h, w]: refused before
    any sampling step (a huge --steps would otherwise run first), and nothing is written."""
    import warnings

    import torch

    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :2] * 1.0

    enc = tmp_path / "enc.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Two()).save(str(enc))
    run = tmp_path / "run"
    code, out, err, _ = cli("train", "diffusion", "--encoder", enc, "--allow-torchscript", "--data",
                            base / "gray8.npy", "--out", run, "--steps", 2, "--hidden", 8, "--depth", 1,
                            "--batch-size", 8, "--quiet", "--device", "cpu")
    assert code == 0, err[-2000:]
    code, out, err, cpu = cli("sample", run, "--autoencoder", base / "vae", "--n", 4, "--steps", 100000,
                              "--quiet", "--device", "cpu", "--out", tmp_path / "s.npz")
    _one_line(code, err, "cannot decode latents of shape [2]")
    assert cpu < 10, cpu
    assert not (tmp_path / "s.npz").exists()
