"""No run is lost: wrong-kind resume, concurrent writers, Ctrl-C, changed settings on resume, orphan temp files and
file modes (issue 12, items 4-8). The CLI runs as a subprocess, as a user would run it."""
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.runfolder import RunLock, check_output_dir, check_resume_config

TINY = ["--n", "64", "--batch-size", "16", "--hidden", "8", "--depth", "1", "--quiet"]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "latentgeo", *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
            and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "moons"
    r = _cli("train", "diffusion", "--data", "moons", "--steps", "3", *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_wrong_kind_resume_is_refused_and_run_kept(moons_run, tmp_path):
    before = _digest(moons_run)
    line = _one_error_line(_cli("train", "flow", "--data", "moons", "--steps", "6", *TINY, "--resume",
                                "--out", str(moons_run)))
    assert "run, not a flow" in line
    assert _digest(moons_run) == before
    flow = tmp_path / "flow"
    assert _cli("train", "flow", "--data", "moons", "--steps", "3", *TINY, "--out", str(flow)).returncode == 0
    before = _digest(flow)
    line = _one_error_line(_cli("train", "diffusion", "--data", "moons", "--steps", "6", *TINY, "--resume",
                                "--out", str(flow)))
    assert "holds a flow run" in line
    assert _digest(flow) == before


@pytest.mark.parametrize("change, what", [(["--lr", "1e-3"], "lr was"), (["--seed", "5"], "seed was"),
                                          (["--batch-size", "32"], "batch_size was"),
                                          (["--hidden", "16"], "net_kwargs.hidden was")])
def test_resume_with_changed_settings_is_refused(moons_run, change, what):
    before = _digest(moons_run)
    args = list(TINY)
    for i in range(0, len(change), 2):  # replace the option in TINY if present, else add it
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    line = _one_error_line(_cli("train", "diffusion", "--data", "moons", "--steps", "6", *args, "--resume",
                                "--out", str(moons_run)))
    assert "different settings" in line and what in line
    assert _digest(moons_run) == before


def test_resume_on_other_data_is_refused(moons_run):
    before = _digest(moons_run)
    line = _one_error_line(_cli("train", "diffusion", "--data", "rings", "--steps", "6", *TINY, "--resume",
                                "--out", str(moons_run)))
    assert "different settings" in line and "user.data" in line
    assert _digest(moons_run) == before


def test_resume_may_extend_steps_and_records_it(tmp_path):
    out = tmp_path / "ext"
    assert _cli("train", "diffusion", "--data", "moons", "--steps", "2", *TINY, "--out", str(out)).returncode == 0
    (out / ".config.json.deadbeef.tmp").write_bytes(b"left by a kill -9 during a write")
    r = _cli("train", "diffusion", "--data", "moons", "--steps", "4", *TINY, "--resume", "--out", str(out))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 4 and cfg["resume_history"] == [{"steps": [2, 4]}]
    assert not list(out.glob(".*.tmp")), "orphan temp file survived the next writer"
    line = _one_error_line(_cli("train", "diffusion", "--data", "moons", "--steps", "3", *TINY, "--resume",
                                "--out", str(out)))
    assert "steps 3 < the 4" in line


def test_second_writer_gets_a_clear_error(moons_run, tmp_path):
    out = tmp_path / "locked"
    with RunLock(out):
        line = _one_error_line(_cli("train", "diffusion", "--data", "moons", "--steps", "2", *TINY,
                                    "--out", str(out)))
        assert "being written by another latentgeo process" in line and str(os.getpid()) in line
    assert not (out / "config.json").exists()
    # after the holder is gone, the folder is free again
    assert _cli("train", "diffusion", "--data", "moons", "--steps", "2", *TINY, "--out", str(out)).returncode == 0


def test_two_processes_race_for_one_folder(tmp_path):
    """A real race: a long run holds the folder; a second process started meanwhile fails, the first continues."""
    out = tmp_path / "race"
    a = subprocess.Popen([sys.executable, "-m", "latentgeo", "train", "diffusion", "--data", "moons", "--steps",
                          "100000", *TINY, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "config.json").exists()
        line = _one_error_line(_cli("train", "diffusion", "--data", "moons", "--steps", "2", *TINY,
                                    "--out", str(out)))
        assert "being written by another" in line
        assert a.poll() is None
        assert json.loads((out / "config.json").read_text())["steps"] == 100000
    finally:
        a.kill()
        a.wait()


def _ctrl_c_as_in_a_terminal():
    """Let the child see SIGINT as a terminal's Ctrl-C does: a runner that started this suite in the background
    (no job control) leaves SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_the_resume_line(tmp_path):
    out = tmp_path / "sigint"
    p = subprocess.Popen([sys.executable, "-m", "latentgeo", "train", "diffusion", "--data", "moons", "--steps",
                          "100000", *TINY, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert "interrupted" in err and "resume with --resume" in err and "Traceback" not in err


def test_outputs_honour_the_umask(moons_run):
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    for name in ("config.json", "model.safetensors", "ema.safetensors", "state.safetensors", "metrics.jsonl"):
        assert stat.S_IMODE((moons_run / name).stat().st_mode) == want, name


def test_run_lock_is_reentrant_and_released(tmp_path):
    with RunLock(tmp_path / "a"):
        with RunLock(tmp_path / "a"):
            pass
        # still held by this process: another process cannot take it
        code = ("from latentgeo.runfolder import RunLock\nimport sys\ntry:\n    RunLock(sys.argv[1]).__enter__()\n"
                "    print('TOOK')\nexcept Exception as e:\n    print('REFUSED')\n")
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True)
        assert "REFUSED" in r.stdout
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True)
    assert "TOOK" in r.stdout


def test_output_dir_check(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LatentgeoError, match="is a file"):
        check_output_dir(f)
    with pytest.raises(LatentgeoError, match="lies below"):
        check_output_dir(f / "sub" / "dir")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()


def test_check_resume_config_rules():
    old = {"steps": 10, "lr": 0.1, "betas": [0.9, 0.999], "device": "cpu", "user": {"data": "moons"}}
    same = {"steps": 10, "lr": 0.1, "betas": (0.9, 0.999), "device": "cuda:0", "user": {"data": "moons"}}
    merged = check_resume_config(old, same, "run")
    assert merged["device"] == "cuda:0" and "resume_history" not in merged
    with pytest.raises(LatentgeoError, match="user.extra was '<unset>'"):
        check_resume_config(old, {**same, "user": {"data": "moons", "extra": 1}}, "run")


def test_disk_full_is_one_line_naming_the_path_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys):
    """ENOSPC in the middle of a checkpoint write: exit 2, one line naming the file, the previous checkpoint intact
    (atomic writes) and loadable, no temp file left behind."""
    import errno

    import latentgeo
    from latentgeo.cli import main

    out = tmp_path / "full"
    base = ["train", "diffusion", "--data", "moons", *TINY, "--ckpt-every", "2", "--log-every", "2", "--out",
            str(out)]
    try:
        main(base[:4] + ["--steps", "2"] + base[4:])
    except SystemExit as exc:
        assert exc.code in (0, None)
    good = latentgeo.load(out / "ema.safetensors")
    good_sd = {k: v.clone() for k, v in good.state_dict().items()}
    capsys.readouterr()
    real_fsync = os.fsync

    calls = []

    def full(fd):  # the run record and the log still fit; the next checkpoint does not
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit) as ei:
        main(base[:4] + ["--steps", "4", "--resume"] + base[4:])
    monkeypatch.setattr(os, "fsync", real_fsync)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert ei.value.code == 2 and len(lines) == 1, err
    assert "No space left on device" in lines[0] and str(out / "state.safetensors") in lines[0]
    again = latentgeo.load(out / "ema.safetensors")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in good_sd.items())
    assert not list(out.glob(".*.tmp"))
