"""Malformed input to the geometry commands (fisher toy / curves, diagnose, geodesic, diffed, spacetime-demo, tps)
fails at once with ONE line ``error: ...`` on stderr and exit code 2 -- no traceback, no long work first.

Every case runs the real CLI in a subprocess with settings under which a late check would take minutes (many
training / optimisation steps), so the time limit also proves that the check comes before the work.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAST_S = 30.0  # every refusal must come well before any training / optimisation


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A tiny trained diffusion run folder (moons) and the files / folders the cases point at."""
    from latentgeo.data import load
    from latentgeo.diffusion import train_denoiser

    root = tmp_path_factory.mktemp("badinput")
    run = root / "run"
    train_denoiser(load("moons", n=256), run, net="mlp", steps=20, batch_size=64,
                   net_kwargs={"hidden": 16, "depth": 1}, progress=False, device="cpu",
                   data_info={"data": "moons", "image": False})
    file = root / "a_file.txt"
    file.write_text("not a folder\n")
    corrupt = root / "run_corrupt"  # the same run with a truncated config.json
    shutil.copytree(run, corrupt)
    (corrupt / "config.json").write_text('{"user": {"data": "moons", ')
    blocked = root / "run_blocked"  # the same run where the default output RUN/geodesic (RUN/diffed) is a file
    shutil.copytree(run, blocked)
    (blocked / "geodesic").write_text("x")
    (blocked / "diffed").write_text("x")
    empty = root / "empty_dir"
    empty.mkdir()
    vae = root / "vae_corrupt"  # looks like a diffusers AutoencoderKL folder, but its config.json is corrupt
    vae.mkdir()
    (vae / "config.json").write_text("{not json")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 16)
    deep = root / "run_deep"  # the same run with a config.json of 100,000 '['
    shutil.copytree(run, deep)
    (deep / "config.json").write_text("[" * 100000)
    return {"RUN": str(run), "FILE": str(file), "BELOW": str(file / "sub"), "CORRUPT": str(corrupt),
            "BLOCKED": str(blocked), "EMPTY": str(empty), "VAE": str(vae), "DEEP": str(deep), "MISSING": str(root / "missing"),
            "OUT": str(root / "out")}


LONG = ["--steps", "100000"]  # what a late check would have to get through first

CASES = [
    # ---- fisher toy
    (["fisher", "toy", "tangential", "--out", "FILE"] + LONG, "is a file"),
    (["fisher", "toy", "tangential", "--out", "BELOW"] + LONG, "lies below"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--n-eval", "0"] + LONG, "--n-eval"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--steps", "0"], "--steps"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--sigmas", "nan,1"] + LONG, "--sigmas"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--params", "0.2,1.5"] + LONG, "delta0"),
    (["fisher", "toy", "compression", "--out", "OUT", "--params", "4,20"] + LONG, "--dim 16"),
    (["fisher", "toy", "compression", "--out", "OUT", "--params", "4.5"] + LONG, "integers"),
    (["fisher", "toy", "curvature", "--out", "OUT", "--omega", "inf"] + LONG, "--omega"),
    (["fisher", "toy", "spiral", "--out", "OUT"], "unknown toy"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--seed", "-1"] + LONG, "--seed"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--device", "tpu9"] + LONG, "--device"),
    (["fisher", "toy", "tangential", "--out", "OUT", "--n-eval", "ten"], "--n-eval"),
    # ---- fisher curves
    (["fisher", "curves", "--denoiser", "RUN", "--data", "moons", "--out", "OUT", "--sigma-max", "1e308"],
     "--sigma-max"),
    (["fisher", "curves", "--denoiser", "RUN", "--data", "moons", "--out", "OUT", "--sigma-min", "nan"],
     "--sigma-min"),
    (["fisher", "curves", "--denoiser", "RUN", "--data", "moons", "--out", "OUT", "--sigma-min", "5",
      "--sigma-max", "1"], "--sigma-min"),
    (["fisher", "curves", "--denoiser", "RUN", "--data", "moons", "--out", "OUT", "--n", "1"], "--n"),
    (["fisher", "curves", "--denoiser", "RUN", "--data", "moons", "--out", "FILE"], "is a file"),
    (["fisher", "curves", "--denoiser", "MISSING", "--data", "moons", "--out", "OUT"], "does not exist"),
    (["fisher", "curves", "--denoiser", "RUN", "--data", "digits", "--out", "OUT", "--n", "8"], "digits"),
    # ---- diagnose
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--steps", "0"], "--steps"),
    (["diagnose", "--encoder", "MISSING", "--data", "digits", "--out", "OUT"] + LONG, "latentgeo train ae"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--n", "5000"] + LONG, "only 1438"),
    # the default --n (2,000) adapts to digits' 1,438 images: the run gets past the data to the (empty) encoder
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT"] + LONG, "empty_dir"),
    (["diagnose", "--encoder", "VAE", "--data", "digits", "--out", "OUT", "--n", "100"] + LONG, "config.json"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "FILE"] + LONG, "is a file"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--n-sigmas", "2"] + LONG,
     "--n-sigmas"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--net", "transformer"], "--net"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--pixel-denoiser", "MISSING"] + LONG,
     "--pixel-denoiser"),
    (["diagnose", "--encoder", "EMPTY", "--data", "digits", "--out", "OUT", "--device", "cuda:99"] + LONG,
     "--device"),
    # ---- geodesic
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "FILE"] + LONG, "is a file"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "BELOW"] + LONG, "lies below"),
    (["geodesic", "BLOCKED", "--from", "0,0", "--to", "1,1"] + LONG, "is a file"),
    (["geodesic", "MISSING", "--from", "0,0", "--to", "1,1"] + LONG, "does not exist"),
    (["geodesic", "CORRUPT", "--from", "0,0", "--to", "1,1"] + LONG, "config.json"),
    (["geodesic", "RUN", "--from", "nan,0", "--to", "1,1", "--out", "OUT"] + LONG, "--from"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--sigma-to", "-1"] + LONG,
     "--sigma-to"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--n-points", "1"] + LONG, "--n-points"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--lr", "inf"] + LONG, "--lr"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--eval-probes", "-2"] + LONG,
     "--eval-probes"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--device", "gpu"] + LONG, "--device"),
    # issue 21: "-0" is not > 0, messages carry a fix; --out in /proc at parse time; a config.json nested 100,000 deep
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "OUT", "--lr", "-0"] + LONG,
     "--lr must be > 0, got -0.0; pass a value above 0"),
    (["geodesic", "RUN", "--from", "0,0", "--to", "1,1", "--out", "/proc/latentgeo-geo"] + LONG,
     "lies in /proc, a kernel file system"),
    (["geodesic", "DEEP", "--from", "0,0", "--to", "1,1", "--out", "OUT"] + LONG, "nests JSON 100,000 levels deep"),
    (["diffed", "RUN", "--data", "moons", "--out", "/sys/latentgeo-diffed", "--steps", "100000"], "lies in /sys"),
    # ---- diffed
    (["diffed", "RUN", "--data", "moons", "--out", "FILE", "--steps", "100000"], "is a file"),
    (["diffed", "BLOCKED", "--data", "moons", "--steps", "100000"], "is a file"),
    (["diffed", "CORRUPT", "--data", "moons", "--steps", "100000"], "config.json"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--pairs", "-3"], "--pairs"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--sigma-min", "nan"], "--sigma-min"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "1"] + LONG, "--matrix"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "2001"] + LONG, "--matrix"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "x"] + LONG, "--matrix"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "50", "--max-points", "-1"] + LONG,
     "--max-points"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "50", "--pair-batch", "-2"] + LONG,
     "--pair-batch"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "50", "--boot", "-1"] + LONG, "--boot"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "50", "--chunk-size", "4", "--max-points",
      "8"] + LONG, "--max-points"),
    (["diffed", "RUN", "--data", "moons", "--out", "FILE", "--matrix", "50"] + LONG, "is a file"),
    (["diffed", "RUN", "--data", "moons", "--out", "OUT", "--matrix", "50", "--steps", "100000,100000"],
     "--steps"),
    # ---- spacetime-demo
    (["spacetime-demo", "all", "--out", "FILE"], "is a file"),
    (["spacetime-demo", "all", "--out", "BELOW"], "lies below"),
    # ---- tps
    (["tps", "alanine", "--out", "OUT", "--k-steps", "0"], "--k-steps"),
    (["tps", "alanine", "--out", "OUT", "--n-points", "1"], "--n-points"),
    (["tps", "alanine", "--out", "OUT", "--avoid", "nan,0,1"], "--avoid"),
    (["tps", "alanine", "--out", "OUT", "--avoid", "0,0,-1"], "--avoid"),
    (["tps", "alanine", "--out", "FILE"], "is a file"),
    (["tps", "alanine", "--out", "BELOW"], "lies below"),
    (["tps", "alanine", "--out", "OUT", "--paths", "-1"], "--paths"),
    (["tps", "alanine", "--out", "OUT", "--snr-penalty", "inf"], "--snr-penalty"),
    (["tps", "alanine", "--out", "OUT", "--train-steps", "0"], "--train-steps"),
    (["tps", "alanine", "--out", "OUT", "--paths", "100000", "--save-states"], "--save-states"),
    (["tps", "alanine", "--out", "OUT", "--device", "cuda:x"], "--device"),
]


def _ids(case):
    argv, _ = case
    return "-".join(a for a in argv[:2]) + ":" + ",".join(a.lstrip("-") for a in argv[2:] if a.startswith("--"))


def _run(args):
    env = {k: v for k, v in os.environ.items() if k != "LATENTGEO_DEBUG"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "latentgeo", *args], capture_output=True, text=True, timeout=120,
                       env=env)
    return p.returncode, p.stderr, time.perf_counter() - t0


@pytest.fixture(scope="module")
def results(paths):
    """Every case's (exit code, stderr, seconds), run a few at a time (each start imports torch: ~2 s of CPU)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return list(pool.map(lambda c: _run([paths.get(a, a) for a in c[0]]), CASES))


@pytest.mark.parametrize("i", range(len(CASES)), ids=[_ids(c) + f"#{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_fast(paths, results, i):
    argv, expected = CASES[i]
    rc, err, dt = results[i]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "; " in lines[0], f"no fix part: {lines[0]}"  # error: <problem>; <fix>
    assert expected in lines[0], lines[0]
    assert dt < FAST_S, f"took {dt:.1f} s: the check comes after long work"
    if "OUT" in argv:  # a refused command creates no output folder
        assert not Path(paths["OUT"]).exists()


def test_diagnose_default_n_adapts_to_small_data():
    from latentgeo.cli._fisher import _load_upto

    x, note = _load_upto("digits", None, 0, 2000)
    assert x.shape[0] == 1438 and "1,438" in note
    x, note = _load_upto("moons", None, 0, 2000)  # synthetic: exactly the default
    assert x.shape[0] == 2000 and note is None


def test_corrupt_json_message_names_the_file(tmp_path):
    from latentgeo.cli._options import read_json_file
    from latentgeo.errors import LatentgeoError

    f = tmp_path / "config.json"
    f.write_text('{"a": ')
    with pytest.raises(LatentgeoError) as e:
        read_json_file(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    json.loads('{"ok": 1}')  # sanity
