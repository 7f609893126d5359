"""The quick demo, end to end, as a user runs it (subprocess), plus the browser check of its report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentgeo.demo import STAGE_TITLES, STAGES, _resolve_budget
from latentgeo.errors import LatentgeoError
from latentgeo.report import browser_check, find_chromium


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "latentgeo", "demo", "--quick", "--out", str(out), "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.mark.slow
def test_quick_demo_writes_report_and_summary(quick_run):
    out, res = quick_run
    report = out / "report.html"
    assert report.exists()
    assert str(report) in res.stdout.strip().splitlines()[-1]  # the CLI prints the report's path last
    html = report.read_text()
    for st in STAGES:
        assert f"<h2>{STAGE_TITLES[st]}</h2>" in html
    assert "<h2>Timings</h2>" in html
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == set(STAGES)
    for st, rec in summary["stages"].items():
        # A stage may be "not available" in a partial build, but it must never crash.
        assert rec["status"] in ("ok", "not available"), (st, rec, summary.get("tracebacks", {}).get(st))
        assert rec["seconds"] >= 0 and rec["cpu_seconds"] >= 0
    assert summary["stages"]["data"]["status"] == "ok"
    assert (out / "classifier.safetensors").exists()
    gen = summary["results"].get("generation")
    if gen:
        floor = gen["metrics"]["real training images (floor)"]
        for name, m in gen["metrics"].items():
            assert all(v is not None for v in m.values()), name
        # real images must score better than the samples of a few-step model on the classifier metric
        others = [m["cfd"] for k, m in gen["metrics"].items() if k != "real training images (floor)"]
        assert others and floor["cfd"] < min(others)


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install -y chromium); "
                                                    "CI installs it")
def test_quick_demo_report_renders_in_chromium(quick_run):
    out, _ = quick_run
    html = (out / "report.html").read_text()
    res = browser_check(out / "report.html")
    assert res["images"] == html.count("<img ") and res["images"] >= 5
    assert res["loaded"] == res["images"] and res["bad"] == []
    for st in STAGES:
        assert STAGE_TITLES[st] in res["sections"]


def test_budget_presets_and_bad_input(tmp_path):
    assert _resolve_budget("quick")["enc_steps"] < _resolve_budget("full")["enc_steps"]
    assert _resolve_budget(0.5)["den_steps"] == _resolve_budget("full")["den_steps"] // 2
    with pytest.raises(LatentgeoError):
        _resolve_budget("huge")
    with pytest.raises(LatentgeoError):
        _resolve_budget(-1.0)
    from latentgeo.demo import run_demo

    with pytest.raises(LatentgeoError):
        run_demo(data="cifar", out=tmp_path)


def test_cli_demo_bad_data_is_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "latentgeo", "demo", "--data", "cifar", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "digits" in res.stderr


def test_unavailable_and_failing_stages_are_reported_not_fatal(tmp_path, monkeypatch):
    import latentgeo.demo as demo

    def missing(ctx):
        raise demo._Unavailable("latentgeo.autoencoders.train_gpe_encoder is not available in this version")

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(demo._STAGE_FUNCS, "gpe", missing)
    monkeypatch.setitem(demo._STAGE_FUNCS, "vae", broken)
    path = demo.run_demo(out=tmp_path, budget={"clf_steps": 5}, progress=False, stages=["data", "gpe", "vae"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["data"]["status"] == "ok"
    assert summary["stages"]["gpe"]["status"] == "not available"
    assert summary["stages"]["vae"]["status"] == "error" and "boom" in summary["stages"]["vae"]["message"]
    assert "geometry" not in summary["stages"]  # not requested
    html = Path(path).read_text()
    assert "Not available in this version" in html and "This stage failed: RuntimeError: boom" in html
