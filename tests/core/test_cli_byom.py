"""Bring your own model: every model-taking command runs on diffusers folders users already have.

Tiny random-init diffusers models (a ``UNet2DModel`` with attention in a ``DDPMPipeline`` folder, an SD-style
``AutoencoderKL`` with attention and SiLU) are saved offline once per module; each command runs as a subprocess
with tiny settings, exits 0 and writes finite numbers. Refusals (1-channel data into a 3-channel VAE, a
``model_index.json`` naming a class outside the allow-list) come as one line, at once.
"""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _diffusers_models import (diffusers_or_skip, forge_model_index, save_pipeline, tiny_unet,  # noqa: E402
                               tiny_vae)

diffusers_or_skip()

ENV = {k: v for k, v in os.environ.items() if k != "LATENTGEO_DEBUG"}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _cli(*args, env=None, timeout=300):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "latentgeo", *map(str, args)], capture_output=True, text=True,
                       env=env or ENV, timeout=timeout)
    return r, time.perf_counter() - t0


def _cpu_seconds_of(fn):
    """(result, CPU seconds the child processes used): independent of how busy the machine is."""
    import resource

    def used():
        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    t0 = used()
    out = fn()
    return out, used() - t0


def _ok(r):
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])


def _one_line_error(r, needle):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.stdout[-1000:], r.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert needle in lines[0], lines[0]
    return lines[0]


def _finite(obj):
    """Every number in a JSON structure is finite (None allowed)."""
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("byom")
    pipe = save_pipeline(root / "pipe", unet=tiny_unet(in_channels=1, sample_size=8))  # digits: [1, 8, 8]
    vae = root / "sd_vae"
    tiny_vae(in_channels=3).save_pretrained(vae)
    rng = np.random.default_rng(0)
    rgb = root / "rgb16.npy"  # 3-channel 16x16 images in [-1, 1] (latentgeo's image contract)
    np.save(rgb, (rng.random((64, 3, 16, 16)) * 2 - 1).astype(np.float32))
    gray = root / "gray16.npy"  # the same size with one channel
    np.save(gray, (rng.random((64, 1, 16, 16)) * 2 - 1).astype(np.float32))
    small = root / "gray8.npy"  # what the pipeline's UNet takes
    np.save(small, (rng.random((64, 1, 8, 8)) * 2 - 1).astype(np.float32))
    return {"root": root, "pipe": pipe, "vae": vae, "rgb": rgb, "gray": gray, "small": small}


def test_fisher_curves_on_a_diffusers_pipeline(models, cli_inproc):
    out = models["root"] / "curves"
    r, _ = _cli("fisher", "curves", "--denoiser", models["pipe"], "--data", models["small"], "--out", out, "--n", 6,
                "--probes", 1, "--n-sigmas", 3, "--device", "cpu")
    _ok(r)
    c = json.loads((out / "curves.json").read_text())
    # the default grid is the model's trained range cut to [0.01, 80] (DDPM linear betas: sigma_min = 0.01)
    assert min(c["sigma"]) >= 0.01 * (1 - 1e-4) and max(c["sigma"]) == pytest.approx(80.0)
    assert _finite(c) and (out / "curves.png").exists()
    # a noise level below the trained range is refused with the range named, or evaluated with --extrapolate
    r = cli_inproc("fisher", "curves", "--denoiser", models["pipe"], "--data", models["small"], "--out", out, "--n", 6,
                   "--sigma-min", 0.001, "--sigma-max", 1, "--device", "cpu")
    line = _one_line_error(r, "--sigma-min 0.001")
    assert "[0.01, 157.4]" in line and "--extrapolate" in line


def test_geodesic_and_diffed_on_a_diffusers_pipeline(models, cli_inproc):
    out = models["root"] / "geo"
    r, _ = _cli("geodesic", models["pipe"], "--from", 0, "--to", 1, "--data", models["small"], "--encode",
                "--sigma-from", 0.2, "--sigma-to", 0.2, "--n-points", 4, "--steps", 2, "--n-nodes", 2,
                "--eval-probes", 1, "--out", out, "--quiet", "--device", "cpu")
    _ok(r)
    g = json.loads((out / "geodesic.json").read_text())
    assert math.isfinite(g["energy"]) and math.isfinite(g["length"]) and g["model"]["path"].endswith("pipe")
    out = models["root"] / "diffed"
    r, _ = _cli("diffed", models["pipe"], "--data", models["small"], "--pairs", 3, "--n-points", 4, "--steps", 2,
                "--n-nodes", 2, "--eval-probes", 1, "--out", out, "--quiet", "--device", "cpu")
    _ok(r)
    d = json.loads((out / "diffed.json").read_text())
    assert len(d["diffed"]) == 3 and all(math.isfinite(v) and v > 0 for v in d["diffed"])
    # no default output folder inside a model folder latentgeo did not write; --sigma-min below the trained range
    r = cli_inproc("diffed", models["pipe"], "--data", models["small"], "--pairs", 3)
    _one_line_error(r, "pass --out DIR")
    r = cli_inproc("diffed", models["pipe"], "--data", models["small"], "--sigma-min", 0.005, "--out", out)
    _one_line_error(r, "outside the noise range")


def test_sample_from_a_diffusers_pipeline(models):
    out = models["root"] / "samples.npz"
    r, _ = _cli("sample", models["pipe"], "--n", 3, "--steps", 2, "--out", out, "--quiet", "--device", "cpu")
    _ok(r)
    with np.load(out) as f:
        assert f["x"].shape == (3, 1, 8, 8) and np.isfinite(f["x"]).all()


def test_geometry_of_a_diffusers_vae(models):
    out = models["root"] / "geometry"
    r, _ = _cli("geometry", models["vae"], "--data", models["rgb"], "--n", 12, "--k", 3, "--plots", out,
                "--device", "cpu")
    _ok(r)
    rep = json.loads((out / "geometry.json").read_text())
    assert rep["n_points"] == 12 and _finite(rep) and rep["encoder"]["path"].endswith("sd_vae")


def test_latent_diffusion_on_a_diffusers_vae_records_its_spec_and_decodes(models):
    run = models["root"] / "latent-run"
    r, _ = _cli("train", "diffusion", "--encoder", models["vae"], "--data", models["rgb"], "--out", run,
                "--steps", 3, "--hidden", 16, "--depth", 1, "--batch-size", 16, "--quiet", "--device", "cpu")
    _ok(r)
    user = json.loads((run / "config.json").read_text())["user"]
    assert user["latent_of"] == {"path": str(models["vae"].resolve())}  # the resolver's spec, not a bare path
    assert user["data_shape"] == [4, 8, 8] and user["decoded_shape"] == [3, 16, 16]
    r, _ = _cli("sample", run, "--n", 2, "--steps", 2, "--quiet", "--device", "cpu")
    _ok(r)
    with np.load(run / "samples.npz") as f:
        assert f["z"].shape == (2, 4, 8, 8) and f["x"].shape == (2, 3, 16, 16)
        assert np.isfinite(f["x"]).all() and np.abs(f["x"]).max() <= 1


def test_diagnose_a_diffusers_vae(models):
    out = models["root"] / "diagnose"
    r, _ = _cli("diagnose", "--encoder", models["vae"], "--data", models["rgb"], "--out", out, "--n", 24,
                "--steps", 2, "--n-eval", 4, "--probes", 1, "--n-sigmas", 3, "--device", "cpu")
    _ok(r)
    s = json.loads((out / "summary.json").read_text())
    enc = s["encoders"]["sd_vae"]
    assert enc["latent_dim"] == 4 * 8 * 8 and s["denoisers"]["sd_vae"]["latent_shape"] == [4, 8, 8]
    assert _finite(enc["d_r"]) and _finite(enc["tangential"]) and _finite(enc["curvature"])


def test_one_channel_data_into_a_three_channel_vae_fails_at_once(models, cli_inproc):
    """A subprocess (interpreter and torch start-up included) refuses in under 5 CPU seconds -- the run would
    otherwise train 100,000 steps first. CPU time, not wall time: other jobs on the machine do not count."""
    (r, wall), cpu = _cpu_seconds_of(lambda: _cli("diagnose", "--encoder", models["vae"], "--data", models["gray"],
                                                  "--out", models["root"] / "dg1", "--steps", 100000))
    _one_line_error(r, "1 channel(s) but the AutoencoderKL expects 3")
    assert cpu < 5.0 and wall < 60, (cpu, wall)
    for args in (["geometry", models["vae"], "--data", models["gray"], "--plots", models["root"] / "gm1"],
                 ["train", "diffusion", "--encoder", models["vae"], "--data", models["gray"], "--out",
                  models["root"] / "td1", "--steps", 100000]):
        t0 = time.process_time()
        r = cli_inproc(*args)
        _one_line_error(r, "1 channel(s) but the AutoencoderKL expects 3")
        assert time.process_time() - t0 < 5.0, args[0]
        assert not (models["root"] / "td1" / "config.json").exists()  # refused before the run folder was written


def test_a_forged_model_index_is_refused(models, cli_inproc):
    forged = forge_model_index(models["pipe"], models["root"] / "forged", "unet", ["evil_module", "Boom"])
    r, _ = _cli("sample", forged, "--n", 2, "--out", models["root"] / "forged.npz")
    line = _one_line_error(r, "never imports classes named in files")
    assert "UNet2DModel" in line  # the allow-list is named
    r = cli_inproc("geodesic", forged, "--from", 0, "--to", 1, "--data", models["small"], "--out",
                   models["root"] / "fg")
    _one_line_error(r, "never imports classes named in files")
    assert "evil_module" not in sys.modules


def test_unknown_specs_list_what_is_accepted(models, cli_inproc):
    r = cli_inproc("fisher", "curves", "--denoiser", models["vae"], "--data", models["small"], "--out",
                   models["root"] / "x")
    _one_line_error(r, "not a denoiser")
    for cmd in (["geodesic", models["root"] / "nothing", "--from", 0, "--to", 1],
                ["sample", models["root"] / "nothing"],
                ["geometry", models["root"] / "nothing", "--data", models["rgb"]]):
        line = _one_line_error(cli_inproc(*cmd), "does not exist")
        assert "diffusers pipeline folder" in line and "--code module:factory" in line, line
    r = cli_inproc("fisher", "curves", "--denoiser", models["pipe"], "--data", models["small"], "--out",
                   models["root"] / "x", "--parametrization", "score")
    _one_line_error(r, "unknown --parametrization 'score'")
    r = cli_inproc("sample", models["pipe"], "--code", "os:system", "--out", models["root"] / "x.npz")
    _one_line_error(r, "not both")


def test_code_runs_only_when_named_on_the_command_line(models, tmp_path, cli_inproc, monkeypatch):
    (tmp_path / "byom_user_models.py").write_text(
        "import torch\n"
        "class Shrink(torch.nn.Module):\n"
        "    def forward(self, x, sigma):\n"
        "        s = sigma.reshape(-1, *([1] * (x.dim() - 1)))\n"
        "        return x / (1 + s ** 2)\n"  # E[x0 | x] for x0 ~ N(0, I): an exact VE denoiser
        "def make():\n"
        "    return Shrink()\n")
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), ENV.get("PYTHONPATH", "")]))
    out = tmp_path / "curves"
    r, _ = _cli("fisher", "curves", "--code", "byom_user_models:make", "--parametrization", "ve", "--data",
                "gmm2d", "--out", out, "--n", 8, "--probes", 1, "--n-sigmas", 2, "--device", "cpu", env=env)
    _ok(r)
    assert _finite(json.loads((out / "curves.json").read_text()))
    # the same string as a model spec is never imported
    monkeypatch.syspath_prepend(str(tmp_path))
    r = cli_inproc("fisher", "curves", "--denoiser", "byom_user_models:make", "--parametrization", "ve", "--data",
                   "gmm2d", "--out", out)
    _one_line_error(r, "--code byom_user_models:make")
    assert "byom_user_models" not in sys.modules
