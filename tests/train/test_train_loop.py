"""The generic training loop: exact resume, DDP equivalence (2 gloo processes), files, errors."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from latentgeo.checkpoint import load, load_state, save_state
from latentgeo.diffusion import EDMDenoiser, edm_loss
from latentgeo.errors import LatentgeoError
from latentgeo.train import train_loop

torch.set_num_threads(1)


def _model():
    torch.manual_seed(0)
    den = EDMDenoiser("mlp", sigma_data=1.0, net_kwargs={"in_dim": 2, "hidden": 16, "depth": 1})
    for p in den.parameters():  # non-zero output layer so every weight receives gradient from step 1
        torch.nn.init.normal_(p, std=0.2)
    return den


def _data():
    return torch.randn(512, 2, generator=torch.Generator().manual_seed(1))


class _Crash(Exception):
    pass


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    kw = dict(steps=30, batch_size=32, lr=1e-2, seed=3, ema_decay=0.9, ckpt_every=10, log_every=5,
              progress=False, device="cpu", warmup_steps=5)
    ref = train_loop(_model(), edm_loss, _data(), out=tmp_path / "ref", **kw)

    calls = {"n": 0}

    def crashing_loss(m, b, g):
        calls["n"] += 1
        if calls["n"] == 25:  # crash mid-way between checkpoints 20 and 30
            raise _Crash()
        return edm_loss(m, b, g)

    with pytest.raises(_Crash):
        train_loop(_model(), crashing_loss, _data(), out=tmp_path / "run", **kw)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["extra"]["step"] == 20
    # A fresh model object (different init) must be fully overwritten by the resumed state.
    torch.manual_seed(123)
    fresh = EDMDenoiser("mlp", sigma_data=1.0, net_kwargs={"in_dim": 2, "hidden": 16, "depth": 1})
    res = train_loop(fresh, edm_loss, _data(), out=tmp_path / "run", resume=True, **kw)
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ref.ema.state_dict().values(), res.ema.state_dict().values()):
        assert torch.equal(a, b)
    # Files: metrics lines are the same steps as the uninterrupted run, checkpoints reload.
    steps_ref = [json.loads(l)["step"] for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    steps_run = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps_ref == steps_run == [5, 10, 15, 20, 25, 30]
    ema = load(tmp_path / "run" / "ema.safetensors")
    for a, b in zip(ema.state_dict().values(), ref.ema.state_dict().values()):
        assert torch.equal(a, b)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["batch_size"] == 32 and cfg["seed"] == 3
    # Re-running into the same folder without resume is refused.
    with pytest.raises(LatentgeoError, match="resume"):
        train_loop(_model(), edm_loss, _data(), out=tmp_path / "run", **kw)


def test_metrics_tuple_loss_and_bad_inputs(tmp_path):
    def loss(m, b, g):
        l = edm_loss(m, b, g)
        return l, {"double": 2 * float(l.detach())}

    res = train_loop(_model(), loss, _data(), steps=4, batch_size=8, log_every=2, progress=False, device="cpu",
                     out=tmp_path / "m", ema_decay=None)
    assert res.ema is None and len(res.metrics) == 2
    for rec in res.metrics:
        assert abs(rec["double"] - 2 * rec["loss"]) < 1e-6 and rec["it_per_s"] > 0
    bad = _data()
    bad[3, 1] = float("nan")
    with pytest.raises(LatentgeoError, match="NaN"):
        train_loop(_model(), edm_loss, bad, steps=2, batch_size=8, progress=False, device="cpu")
    with pytest.raises(LatentgeoError):
        train_loop(_model(), edm_loss, _data(), steps=2, batch_size=0, progress=False, device="cpu")


# ------------------------------------------------------------------ DDP


def _mse_loss(m, batch, g):
    # Deterministic loss (no per-rank noise), so 2 ranks x B/2 and 1 rank x B see exactly the same data.
    x, y = batch
    return ((m(x) - y) ** 2).mean()


def _reg_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()


def _reg_data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(256, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = _reg_model()
    if rank == 1:  # different init on rank 1: the loop must broadcast rank 0's weights
        torch.nn.init.normal_(model[0].weight)
    res = train_loop(model, _mse_loss, _reg_data(), steps=6, batch_size=64, lr=1e-2, seed=0, ema_decay=0.9,
                     progress=False, device="cpu", grad_clip=0.5)
    save_state(os.path.join(out, f"rank{rank}.safetensors"), {k: v.clone() for k, v in res.model.state_dict().items()})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    single = train_loop(_reg_model(), _mse_loss, _reg_data(), steps=6, batch_size=64, lr=1e-2, seed=0,
                        ema_decay=0.9, progress=False, device="cpu", grad_clip=0.5)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    r0 = load_state(tmp_path / "rank0.safetensors")
    r1 = load_state(tmp_path / "rank1.safetensors")
    init = _reg_model().state_dict()
    for k, v in single.model.state_dict().items():
        assert torch.equal(r0[k], r1[k])  # ranks stay in sync
        assert not torch.allclose(v, init[k])  # training moved the weights
        assert torch.allclose(r0[k], v, rtol=0, atol=1e-12), (k, float((r0[k] - v).abs().max()))


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path):
    """The README's multi-process command: `torchrun --nproc_per_node=2 -m latentgeo train diffusion` (gloo on CPU)
    trains, writes one set of checkpoints, reports once (rank 0), and the result loads."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from latentgeo.diffusion import load_denoiser

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed next to this interpreter")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "latentgeo", "train",
                        "diffusion", "--data", "moons", "--steps", "20", "--batch-size", "64", "--hidden", "16",
                        "--depth", "1", "--out", str(out), "--quiet", "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained 20 steps") == 1  # rank 0 only
    den = load_denoiser(out)
    x = torch.randn(5, 2)
    assert torch.isfinite(den(x, torch.full((5,), 0.5))).all()
