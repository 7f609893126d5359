"""train_loop's hooks: evaluation records, early stop (recorded, final on resume), time budgets on a fake clock,
learning-rate schedules (closed form), and exact resume of step-based runs that use them."""
import json
import math
import time

import pytest
import torch

import latentgeo.train.loop as loop_mod
from latentgeo.checkpoint import load_state
from latentgeo.errors import LatentgeoError
from latentgeo.train import cosine_schedule, train_loop

torch.set_num_threads(1)

KW = dict(batch_size=16, lr=1e-2, seed=1, ema_decay=None, progress=False, device="cpu", log_every=5)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 3, generator=g)
    return x, x.sum(1, keepdim=True).sin()


XV, YV = _data()


def _loss(m, b, g):
    x, y = b
    return ((m(x) - y) ** 2).mean()


def _val(m, step):
    assert not m.training and not torch.is_grad_enabled()  # eval mode, no grad
    return {"val": float(((m(XV) - YV) ** 2).mean())}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class _Crash(Exception):
    pass


def test_eval_records_and_training_unchanged(tmp_path):
    res = train_loop(_model(), _loss, _data(), steps=12, eval_fn=_val, eval_every=4, out=tmp_path / "a", **KW)
    recs = _lines(tmp_path / "a" / "metrics.jsonl")
    assert recs == res.metrics and res.stopped == "steps" and res.step == 12
    # step 0, every 4 steps and the last one; log records (every 5) in between carry no evaluation
    assert [r["step"] for r in recs if "val" in r] == [0, 4, 8, 12]
    assert [r["step"] for r in recs] == [0, 4, 5, 8, 10, 12]
    assert recs[0] == {"step": 0, "train_s": 0.0, "val": recs[0]["val"]}
    assert recs[-1]["val"] < recs[0]["val"] and all("loss" in r for r in recs[1:])
    assert json.loads((tmp_path / "a" / "config.json").read_text())["eval_every"] == 4
    # evaluation does not perturb training: same weights as a run without it
    plain = train_loop(_model(), _loss, _data(), steps=12, **KW)
    assert _same(res.model, plain.model)


def test_early_stop_is_recorded_and_final(tmp_path):
    ref = train_loop(_model(), _loss, _data(), steps=40, eval_fn=_val, eval_every=5, **KW)
    vals = [(r["step"], r["val"]) for r in ref.metrics if "val" in r]
    # the first evaluation after step 0 that beats every earlier one; a threshold between the two is met there
    i = next(i for i in range(1, len(vals)) if vals[i][1] < min(v for _, v in vals[:i]))
    at, thr = vals[i][0], (vals[i][1] + min(v for _, v in vals[:i])) / 2
    out = tmp_path / "s"
    res = train_loop(_model(), _loss, _data(), steps=40, eval_fn=_val, eval_every=5,
                     stop_fn=lambda r: r["val"] < thr, out=out, **KW)
    assert res.stopped == "stop_fn" and res.step == at and 0 < at < 40
    recs = _lines(out / "metrics.jsonl")
    assert recs[-1]["step"] == at and recs[-1]["stopped"] == "stop_fn"
    assert [r for r in recs if "stopped" in r] == [recs[-1]]
    st = load_state(out / "state.safetensors")
    assert int(st["step"]) == at and st["stopped"] == "stop_fn"
    # resuming a stopped run (even with more steps and no stop_fn) trains no further and restores its weights
    calls = {"n": 0}

    def counting(m, b, g):
        calls["n"] += 1
        return _loss(m, b, g)

    again = train_loop(_model(), counting, _data(), steps=80, eval_fn=_val, eval_every=5, out=out, resume=True, **KW)
    assert calls["n"] == 0 and again.step == at and again.stopped == "stop_fn" and _same(again.model, res.model)
    assert _lines(out / "metrics.jsonl") == recs


def test_stop_fn_without_eval_sees_log_records():
    res = train_loop(_model(), _loss, _data(), steps=30, stop_fn=lambda r: r["step"] >= 10, **KW)
    assert res.step == 10 and res.stopped == "stop_fn" and [r["step"] for r in res.metrics] == [5, 10]


def test_stop_at_step_zero(tmp_path):
    res = train_loop(_model(), _loss, _data(), steps=30, eval_fn=_val, stop_fn=lambda r: True, out=tmp_path / "z",
                     **KW)
    assert res.step == 0 and res.stopped == "stop_fn" and res.metrics == [dict(res.metrics[0], stopped="stop_fn")]
    assert load_state(tmp_path / "z" / "state.safetensors")["stopped"] == "stop_fn"


class _FakeClock:
    """Advances only when the loss function says so: one 'second' per training step."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_timer_kinds():
    assert loop_mod._timer("cpu") is time.process_time and loop_mod._timer("wall") is time.perf_counter


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_budget_stop_on_a_fake_clock(tmp_path, monkeypatch, clock):
    fake = _FakeClock()
    seen = []
    monkeypatch.setattr(loop_mod, "_timer", lambda c: (seen.append(c), fake)[1])

    def loss(m, b, g):
        fake.t += 1.0
        return _loss(m, b, g)

    out = tmp_path / "b"
    res = train_loop(_model(), loss, _data(), steps=10 ** 6, budget_s=6.5, clock=clock, eval_fn=_val, eval_every=3,
                     out=out, **KW)
    assert seen == [clock]
    assert res.stopped == "budget" and res.step == 7 and res.train_s == pytest.approx(7.0)
    recs = _lines(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [0, 3, 5, 6, 7]  # evaluations, logs, and the stop step (evaluated)
    assert recs[-1]["stopped"] == "budget" and "val" in recs[-1] and recs[-1]["train_s"] == pytest.approx(7.0)
    assert [r["train_s"] for r in recs] == pytest.approx([0, 3, 5, 6, 7])
    st = load_state(out / "state.safetensors")
    assert int(st["step"]) == 7 and st["stopped"] == "budget" and float(st["train_s"]) == pytest.approx(7.0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["budget_s"] == 6.5 and cfg["clock"] == clock
    # the same budget again: already spent, nothing more; a larger budget extends the run from its spent time
    same = train_loop(_model(), loss, _data(), steps=10 ** 6, budget_s=6.5, clock=clock, eval_fn=_val, eval_every=3,
                      out=out, resume=True, **KW)
    assert same.step == 7 and same.stopped == "budget" and fake.t == 107.0
    more = train_loop(_model(), loss, _data(), steps=10 ** 6, budget_s=10, clock=clock, eval_fn=_val, eval_every=3,
                      out=out, resume=True, **KW)
    assert more.step == 10 and more.stopped == "budget" and more.train_s == pytest.approx(10.0)
    assert json.loads((out / "config.json").read_text())["resume_history"] == [{"budget_s": [6.5, 10]}]
    # steps still cap a budgeted run
    capped = train_loop(_model(), loss, _data(), steps=4, budget_s=100.0, clock=clock, **KW)
    assert capped.step == 4 and capped.stopped == "steps"


def test_cosine_closed_form():
    for p, want in [(0, 1.0), (0.25, (1 + math.sqrt(0.5)) / 2), (0.5, 0.5), (0.75, (1 - math.sqrt(0.5)) / 2),
                    (1, 0.0), (-1, 1.0), (2, 0.0)]:
        assert cosine_schedule(p) == pytest.approx(want, abs=1e-15)


def _lrs_of(monkeypatch):
    lrs = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return lrs


def test_step_based_schedules(monkeypatch):
    lrs = _lrs_of(monkeypatch)
    train_loop(_model(), _loss, _data(), steps=8, lr_schedule="cosine", **KW)
    assert lrs == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)], rel=1e-12)
    lrs.clear()  # a callable of the progress, on top of the warmup
    train_loop(_model(), _loss, _data(), steps=8, lr_schedule=lambda p: 1 - p, warmup_steps=2, **KW)
    assert lrs == pytest.approx([1e-2 * min(1, (k + 1) / 2) * (1 - k / 8) for k in range(8)], rel=1e-12)
    lrs.clear()
    train_loop(_model(), _loss, _data(), steps=3, lr_schedule="constant", **KW)
    assert lrs == [1e-2] * 3


def test_time_based_cosine_on_a_fake_clock(monkeypatch):
    fake = _FakeClock()
    monkeypatch.setattr(loop_mod, "_timer", lambda c: fake)
    lrs = _lrs_of(monkeypatch)

    def loss(m, b, g):
        fake.t += 2.0
        return _loss(m, b, g)

    # progress = max(step / steps, train_s / budget) = max(k / 100, 2k / 10): the budget binds
    res = train_loop(_model(), loss, _data(), steps=100, budget_s=10.0, lr_schedule="cosine", **KW)
    assert res.step == 5 and res.stopped == "budget"
    assert lrs == pytest.approx([1e-2 * cosine_schedule(2 * k / 10) for k in range(5)], rel=1e-12)


def test_step_based_resume_with_hooks_is_bit_identical(tmp_path):
    kw = dict(KW, steps=30, ckpt_every=10, eval_fn=_val, eval_every=5, lr_schedule="cosine", warmup_steps=3,
              ema_decay=0.9, stop_fn=lambda r: r["val"] < 0.0)  # stop never met
    ref = train_loop(_model(), _loss, _data(), out=tmp_path / "ref", **kw)
    calls = {"n": 0}

    def crashing(m, b, g):
        calls["n"] += 1
        if calls["n"] == 24:
            raise _Crash()
        return _loss(m, b, g)

    with pytest.raises(_Crash):
        train_loop(_model(), crashing, _data(), out=tmp_path / "run", **kw)
    torch.manual_seed(5)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    res = train_loop(fresh, _loss, _data(), out=tmp_path / "run", resume=True, **kw)
    assert _same(ref.model, res.model) and _same(ref.ema, res.ema)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("it_per_s", "time_s", "train_s")} for r in rs]
    assert strip(_lines(tmp_path / "run" / "metrics.jsonl")) == strip(_lines(tmp_path / "ref" / "metrics.jsonl"))
    # a changed schedule is refused on resume
    with pytest.raises(LatentgeoError, match="lr_schedule"):
        train_loop(_model(), _loss, _data(), out=tmp_path / "run", resume=True, **dict(kw, lr_schedule=None))


@pytest.mark.parametrize("bad, match", [
    (dict(budget_s=0), "time budget"), (dict(budget_s=float("inf")), "time budget"),
    (dict(clock="gpu"), "unknown clock 'gpu'"), (dict(lr_schedule="step"), "unknown lr schedule 'step'"),
    (dict(eval_every=0), "eval_every"), (dict(lr_schedule=lambda p: float("nan")), "lr schedule returned"),
    (dict(eval_fn=lambda m, s: 3.0), "eval_fn must return a dict"),
])
def test_bad_hook_settings(bad, match):
    with pytest.raises(LatentgeoError, match=match):
        train_loop(_model(), _loss, _data(), steps=2, **dict(KW, **bad))


# ------------------------------------------------------------------ DDP: rank 0 decides stops and the clock


def _ddp_worker(rank, world, port, out):
    import os

    from latentgeo.checkpoint import save_state

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    fake = _FakeClock()
    loop_mod._timer = lambda c: fake  # a spawned process: nothing to restore
    per_step = 1.0 if rank == 0 else 3.0  # rank 1 alone would run out of budget at step 3

    def loss(m, b, g):
        fake.t += per_step
        return _loss(m, b, g)

    res = train_loop(_model(), loss, _data(), steps=100, budget_s=6.5, eval_fn=_val, eval_every=2,
                     stop_fn=lambda r: rank == 1, lr_schedule="cosine", **dict(KW, batch_size=16))
    save_state(os.path.join(out, f"rank{rank}.safetensors"),
               {"step": res.step, "stopped": res.stopped, "train_s": res.train_s,
                **{k: v.clone() for k, v in res.model.state_dict().items()}})


@pytest.mark.slow
def test_ddp_hooks_follow_rank0(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    r0, r1 = (load_state(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for r in (r0, r1):  # rank 1's stop_fn and faster clock are ignored: rank 0's decide
        assert int(r["step"]) == 7 and r["stopped"] == "budget" and float(r["train_s"]) == pytest.approx(7.0)
    for k in r0:
        if isinstance(r0[k], torch.Tensor):
            assert torch.equal(r0[k], r1[k])
