"""Issue 12, training side: every malformed input of `train diffusion|flow|ae`, `sample`, `data check`, `geometry`
and `demo` gets ONE line `error: ...` on stderr, exit code 2, no traceback, and fails before any training.

Each case is a real `python -m latentgeo` process. The cases run two at a time in a module fixture (each is
~2 s of interpreter and torch start-up) and every test then checks its own result. Training options carry huge
--steps, so a check that came after the first training step would blow the per-case time limit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BIG = "100000000"  # MAX_STEPS: accepted, and never finished if the command started training
FAST_S = 30.0

TD = ["train", "diffusion", "--data", "moons", "--n", "64", "--quiet", "--device", "cpu"]
TF = ["train", "flow", "--data", "moons", "--n", "64", "--quiet", "--device", "cpu"]
TA = ["train", "ae", "--data", "moons", "--n", "64", "--n-val", "32", "--quiet", "--engine", "fit"]

CASES = [
    # train diffusion: ranges, NaN/inf, sizes, device, --out, --encoder
    (TD + ["--out", "{t}/o", "--steps", BIG, "--depth", "-1"], "--depth must be >= 0"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--hidden", "1000000000"], "--hidden must be <= 65,536"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--hidden", "60000", "--depth", "64"], "billion parameters"),
    (TD + ["--out", "{t}/o", "--steps", "1e30"], "'--steps'"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--lr", "nan"], "--lr must be a finite number"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--lr", "inf"], "--lr must be a finite number"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--ema", "1"], "--ema must be < 1"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--seed", "-3"], "--seed must be >= 0"),
    (["train", "diffusion", "--data", "moons", "--out", "{t}/o", "--steps", BIG, "--device", "tpu"],
     "unknown --device 'tpu'"),
    (TD + ["--out", "{t}/afile", "--steps", BIG], "is a file, not a folder"),
    (TD + ["--out", "{t}/afile/sub", "--steps", BIG], "which is a file, not a folder"),
    (["train", "diffusion", "--encoder", "{t}/diffrun", "--out", "{t}/o", "--steps", BIG],
     "'{t}/diffrun' is a diffusion run, not an autoencoder; pass the --out folder of `latentgeo train ae`"),
    (["train", "diffusion", "--encoder", "{t}/nowhere", "--out", "{t}/o", "--steps", BIG], "does not exist"),
    (["train", "diffusion", "--encoder", "{t}/badae", "--out", "{t}/o", "--steps", BIG],
     "autoencoder.json' is corrupt"),
    (TD + ["--out", "{t}/aefolder", "--steps", BIG], "holds an autoencoder (`latentgeo train ae`), not a diffusion"),
    # train flow
    (TF + ["--out", "{t}/diffrun", "--steps", BIG], "holds a diffusion run, not a flow run"),
    (["train", "flow", "--encoder", "{t}/diffrun", "--out", "{t}/o", "--steps", BIG],
     "'{t}/diffrun' is a diffusion run, not an autoencoder; pass the --out folder of `latentgeo train ae`"),
    (TF + ["--out", "{t}/o", "--steps", BIG, "--depth", "0"], "--depth must be >= 1"),
    (TF + ["--out", "{t}/afile/sub", "--steps", BIG], "which is a file, not a folder"),
    # train ae
    (TA + ["--out", "{t}/o", "--steps", BIG, "--kl-weight", "-1"], "--kl-weight must be >= 0"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--lr", "0"], "--lr must be > 0"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--mds-weight", "-inf", "--method", "ae-mds"], "--mds-weight must be a finite"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--batch-size", "1"], "--batch-size must be >= 2"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--latent-dim", "-2"], "--latent-dim must be >= 1"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--gme-threshold", "nan"], "--gme-threshold must be a finite"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--method", "vae", "--decoder-steps", "5"], "are GPE settings"),
    (TA + ["--out", "{t}/afile", "--steps", BIG], "is a file, not a folder"),
    (TA + ["--out", "{t}/afile/sub", "--steps", BIG], "which is a file, not a folder"),
    (TA + ["--out", "{t}/diffrun", "--steps", BIG], "holds a diffusion run, not an autoencoder run"),
    (TA + ["--out", "{t}/corruptcfg", "--steps", BIG, "--resume"], "config.json' is corrupt"),
    # sample
    (["sample", "{t}/nowhere"], "does not exist; pass the --out folder of `latentgeo train diffusion`"),
    (["sample", "{t}/empty", "--steps", "100000"], "is not a latentgeo training folder (it has no config.json)"),
    (["sample", "{t}/corruptcfg", "--steps", "100000"], "config.json' is corrupt"),
    (["sample", "{t}/aefolder", "--steps", "100000"], "is an autoencoder folder"),
    (["sample", "{t}/diffrun", "--n", "1000000000"], "--n must be <= 100,000,000"),
    (["sample", "{t}/diffrun", "--steps", "0"], "--steps must be >= 1"),
    (["sample", "{t}/diffrun", "--out", "{t}/afile/s.npz", "--steps", "100000"], "which is a file, not a folder"),
    (["sample", "{t}/diffrun", "--out", "{t}/adir", "--steps", "100000"], "is a folder, not a file"),
    (["sample", "{t}/diffrun", "--sampler", "magic", "--steps", "100000"], "unknown sampler 'magic'"),
    # geometry
    (["geometry", "{t}/diffrun"],
     "'{t}/diffrun' is a diffusion run, not an autoencoder; pass the --out folder of `latentgeo train ae`"),
    (["geometry", "{t}/badae"], "autoencoder.json' is corrupt"),
    (["geometry", "{t}/diffrun", "--k", "0"], "--k must be >= 1"),
    (["geometry", "{t}/badae", "--plots", "{t}/afile"], "is a file, not a folder"),
    # data check
    (["data", "check", "moons", "--n", "1e12"], "'--n'"),
    (["data", "check", "moons", "--n", "1000000000000"], "--n must be <= 100,000,000"),
    (["data", "check", "moons", "--path", "{t}/adir"], "drop --path"),
    # issue 21: every error has a fix part; "-0" is not > 0
    (TD + ["--out", "{t}/o", "--steps", "-1"], "--steps must be >= 1, got -1; pass 1 or more"),
    (TD + ["--out", "{t}/o", "--steps", BIG, "--lr", "-0"], "--lr must be > 0, got -0.0; pass a value above 0"),
    (TA + ["--out", "{t}/o", "--steps", BIG, "--lr", "-0"], "--lr must be > 0, got -0.0; pass a value above 0"),
    # issue 21: --out in a kernel file system is refused at parse time (before any model or data is loaded)
    (TD + ["--out", "/proc/latentgeo-out", "--steps", BIG], "lies in /proc, a kernel file system"),
    (TA + ["--out", "/sys/latentgeo-out", "--steps", BIG], "lies in /sys, a kernel file system"),
    (["sample", "{t}/diffrun", "--out", "/proc/self/s.npz", "--steps", "100000"], "lies in /proc"),
    # issue 21: JSON nested 100,000 deep or larger than 16 MiB is refused before it is parsed
    (["sample", "{t}/deepcfg", "--steps", "100000"], "nests JSON 100,000 levels deep"),
    (["sample", "{t}/bigcfg", "--steps", "100000"], "more than the 16 MiB a JSON file latentgeo reads"),
    (["sample", "{t}/diffrun", "--schedule", '{"beta_schedule": ' + "[" * 100000, "--steps", "100000"],
     "--schedule JSON nests JSON 100,001 levels deep"),
    # issue 21: forged latentgeo metadata in a safetensors file
    (["sample", "{t}/meta_list.safetensors", "--steps", "100000"], "is '[1,2]', not a JSON object"),
    (["sample", "{t}/meta_42.safetensors", "--steps", "100000"], "is '42', not a JSON object"),
    (["sample", "{t}/meta_nan.safetensors", "--steps", "100000"], "is 'NaN', not a JSON object"),
    (["sample", "{t}/meta_deep.safetensors", "--steps", "100000"], "nests JSON 100,000 levels deep"),
    # demo
    (["demo", "--threads", "-4", "--out", "{t}/d"], "--threads must be >= 1"),
    (["demo", "--out", "{t}/afile", "--quick"], "is a file, not a folder"),
    (["demo", "--out", "{t}/afile/sub", "--quick"], "which is a file, not a folder"),
    (["demo", "--data", "cifar", "--out", "{t}/d", "--quick"], "unknown data set 'cifar'"),
]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("LATENTGEO_DEBUG", "LATENTGEO_DATA")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(argv, cwd, timeout=60):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "latentgeo", *argv], capture_output=True, text=True, env=_env(),
                       cwd=cwd, timeout=timeout)
    return r.returncode, r.stderr, time.perf_counter() - t0


def _make_folders(t: Path) -> None:
    (t / "afile").write_text("not a folder\n")
    (t / "adir").mkdir()
    (t / "empty").mkdir()
    (t / "empty" / "notes.txt").write_text("nothing latentgeo wrote\n")
    (t / "diffrun").mkdir()
    (t / "diffrun" / "config.json").write_text(json.dumps(
        {"steps": 10, "model_class": "EDMDenoiser", "user": {"kind": "denoiser", "data_shape": [2], "net": "mlp"}}))
    (t / "corruptcfg").mkdir()
    (t / "corruptcfg" / "config.json").write_text('{"steps": 10, "user": {')
    (t / "badae").mkdir()
    (t / "badae" / "encoder.safetensors").write_bytes(b"")
    (t / "badae" / "autoencoder.json").write_text('{"method": "gpe", ')
    (t / "aefolder").mkdir()
    (t / "aefolder" / "config.json").write_text(json.dumps({"kind": "autoencoder", "method": "gpe"}))
    (t / "deepcfg").mkdir()
    (t / "deepcfg" / "config.json").write_text("[" * 100000)
    (t / "bigcfg").mkdir()
    with open(t / "bigcfg" / "config.json", "wb") as f:  # 17 MiB (sparse): refused by its size, never read
        f.truncate(17 * 2 ** 20)
    import torch
    from safetensors.torch import save_file

    for name, meta in (("list", "[1,2]"), ("42", "42"), ("nan", "NaN"), ("deep", "[" * 100000)):
        save_file({"w": torch.zeros(2)}, str(t / f"meta_{name}.safetensors"), metadata={"latentgeo": meta})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    t = tmp_path_factory.mktemp("bad_input")
    _make_folders(t)
    argvs = [[a.replace("{t}", str(t)) for a in argv] for argv, _ in CASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        res = list(pool.map(lambda a: _run(a, cwd=t), argvs))
    return t, res


def _check_one_line(code, err, needle, elapsed=0.0):
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].strip() != "error:", err
    assert "; " in lines[0], f"no fix part: {lines[0]}"  # error: <problem>; <fix>
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]
    assert elapsed < FAST_S, f"took {elapsed:.1f} s: the check came after the work started"


@pytest.mark.parametrize("i", range(len(CASES)), ids=[" ".join(a[:2] + a[-2:]) for a, _ in CASES])
def test_bad_input_is_one_line_before_work(results, i):
    t, res = results
    code, err, elapsed = res[i]
    _check_one_line(code, err, CASES[i][1].replace("{t}", str(t)), elapsed)
    assert not (t / "o" / "state.safetensors").exists() and not list(t.glob("o/state_*.safetensors"))
    assert (t / "afile").read_text() == "not a folder\n"  # nothing written over what was there


def test_train_ae_second_writer_is_refused(tmp_path):
    from latentgeo.runfolder import RunLock

    out = tmp_path / "ae"
    with RunLock(out):
        code, err, elapsed = _run(TA + ["--out", str(out), "--steps", BIG], cwd=tmp_path)
    _check_one_line(code, err, "is being written by another latentgeo process", elapsed)
    assert not (out / "config.json").exists() and not list(out.glob("state_*"))


def test_train_ae_resume_refuses_changed_settings_and_records_growth(tmp_path, capsys, monkeypatch):
    from latentgeo.cli import main

    monkeypatch.delenv("LATENTGEO_DEBUG", raising=False)
    out = tmp_path / "ae"
    base = TA + ["--out", str(out), "--batch-size", "16", "--steps", "3"]
    main(base)
    cfg_file = out / "config.json"
    before = cfg_file.read_bytes()
    rec = json.loads(before)
    assert rec["kind"] == "autoencoder" and rec["lr"] == 1e-3 and rec["steps"] == 3 and rec["decoder_steps"] == 3
    capsys.readouterr()
    for extra, needle in ((["--resume", "--lr", "0.01"], "lr was 0.001, now 0.01"),
                          ([], "already holds a trained autoencoder; pass --resume"),
                          (["--resume", "--decoder-steps", "2"], "--decoder-steps 3 or more")):
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        _check_one_line(e.value.code, capsys.readouterr().err, needle)
        assert cfg_file.read_bytes() == before  # the record of the run is untouched
    main(base + ["--resume", "--decoder-steps", "5"])  # the decoder stage may grow
    rec = json.loads(cfg_file.read_text())
    assert rec["decoder_steps"] == 5 and rec["resume_history"] == [{"decoder_steps": [3, 5]}]
    assert json.loads((out / "autoencoder.json").read_text())["decoder_stage"]["steps"] == 5


def _leaf_commands(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _leaf_commands(sub, path + (name,))


def test_ctrl_c_line_offers_resume_only_where_the_command_has_it():
    """Issue 21: Ctrl-C in `geodesic` said "resume with --resume", an option geodesic does not have."""
    import typer

    from latentgeo.cli import _interrupted_message, app

    leaves = list(_leaf_commands(typer.main.get_command(app)))
    assert len(leaves) > 10
    with_resume = set()
    for path, cmd in leaves:
        has = any("--resume" in getattr(p, "opts", ()) for p in cmd.params)
        line = _interrupted_message(["--threads", "1", *path, "ARG"])
        assert line.startswith("error: interrupted; ") and ("--resume" in line) == has, (path, line)
        if has:
            with_resume.add(" ".join(path))
    assert {"train diffusion", "train flow", "train ae"} <= with_resume and "geodesic" not in with_resume


def test_ctrl_c_in_geodesic_exits_130_without_promising_resume(tmp_path, capsys, monkeypatch):
    from latentgeo.cli import _spacetime, main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.delenv("LATENTGEO_DEBUG", raising=False)
    monkeypatch.setattr(_spacetime, "_check_run", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["geodesic", str(tmp_path / "run"), "--from", "0,0", "--to", "1,1", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert e.value.code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; ") and "--resume" not in lines[0], err
    assert "run it again" in lines[0] and "Traceback" not in err
