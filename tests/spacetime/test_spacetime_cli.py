"""CLI: `latentgeo geodesic`, `latentgeo diffed`, `latentgeo spacetime-demo` on tiny trained runs."""
import json

import pytest
import torch

from latentgeo.cli import main


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    from latentgeo.data import load
    from latentgeo.diffusion import train_denoiser

    out = tmp_path_factory.mktemp("run_moons")
    x = load("moons", n=512)
    train_denoiser(x, out, net="mlp", steps=30, batch_size=128, net_kwargs={"hidden": 16, "depth": 1},
                   progress=False, device="cpu", data_info={"data": "moons", "image": False})
    return out


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


def test_geodesic_cli_low_dim(moons_run, tmp_path, capsys):
    out = tmp_path / "geo"
    main(["geodesic", str(moons_run), "--from", "-1,0.3", "--to", "1.8,0.1", "--n-points", "12", "--steps", "15",
          "--probes", "exact", "--eval-probes", "exact", "--quiet", "--out", str(out)])
    rec = json.loads((out / "geodesic.json").read_text())
    assert len(rec["xs"]) == 12 and len(rec["sigmas"]) == 12
    assert rec["length"] > 0 and rec["energy"] <= rec["history"]["energy"][0] + 1e-6
    assert (out / "geodesic.png").stat().st_size > 1000
    assert "geodesic: length" in capsys.readouterr().out


def test_diffed_cli(moons_run, tmp_path, capsys):
    out = tmp_path / "d"
    main(["diffed", str(moons_run), "--data", "moons", "--pairs", "4", "--n-points", "8", "--steps", "5",
          "--probes", "exact", "--eval-probes", "exact", "--quiet", "--out", str(out)])
    rec = json.loads((out / "diffed.json").read_text())
    assert len(rec["diffed"]) == 4 and all(d > 0 for d in rec["diffed"])
    assert "euclidean" in rec["rank_correlations"]
    assert (out / "diffed_scatter.png").exists() and (out / "diffed_geodesic.png").exists()


def test_cli_errors(moons_run, tmp_path, capsys):
    code, cap = _run(["geodesic", str(moons_run), "--from", "1,2,3", "--to", "0,0", "--quiet"], capsys)
    assert code == 2 and "coordinates" in cap.err
    code, cap = _run(["geodesic", str(tmp_path / "nope"), "--from", "1,2", "--to", "0,0"], capsys)
    assert code == 2 and "error:" in cap.err
    code, cap = _run(["diffed", str(moons_run), "--data", "moons", "--pairs", "2"], capsys)
    assert code == 2 and "--pairs" in cap.err
    code, cap = _run(["geodesic", str(moons_run), "--from", "1,2", "--to", "0,0", "--probes", "zero"], capsys)
    assert code == 2 and "--probes" in cap.err


@pytest.mark.slow
def test_geodesic_cli_images(tmp_path, capsys):
    from latentgeo.data import load
    from latentgeo.diffusion import train_denoiser

    run = tmp_path / "run_digits"
    x = load("digits", n=128)
    train_denoiser(x, run, net="mlp", steps=10, batch_size=64, net_kwargs={"hidden": 16, "depth": 1},
                   progress=False, device="cpu", data_info={"data": "digits", "image": True})
    out = tmp_path / "g"
    main(["geodesic", str(run), "--data", "digits", "--from", "0", "--to", "3", "--n-points", "6,10", "--steps", "3,2",
          "--chunk-size", "4", "--quiet", "--out", str(out)])
    rec = json.loads((out / "geodesic.json").read_text())
    assert len(rec["xs"]) == 10 and len(rec["xs"][0]) == 64  # 8x8 images are small enough to inline
    assert (out / "geodesic.png").stat().st_size > 1000
    out2 = tmp_path / "d"
    main(["diffed", str(run), "--data", "digits", "--pairs", "3", "--n-points", "6", "--steps", "2", "--quiet",
          "--out", str(out2)])
    rec = json.loads((out2 / "diffed.json").read_text())
    assert len(rec["ssim"]) == 3 and "ssim" in rec["rank_correlations"]


def test_demo_cli(tmp_path, capsys):
    main(["spacetime-demo", "collapse", "--out", str(tmp_path)])
    assert (tmp_path / "fisher_rao_collapse.png").exists()
