"""diagnose() plumbing with exact denoisers (an isometric encoder must give D_R ~ 0), and the CLI commands."""
import json

import pytest
import torch

from latentgeo.fisher.diagnosis import diagnose, normalise
from latentgeo.fisher.exact import GaussianMixture

torch.set_num_threads(1)
F64 = torch.float64


def _gm(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(3, n, generator=g, dtype=F64) + 1.0
    A = torch.randn(3, n, n, generator=g, dtype=F64) * 0.4
    return GaussianMixture(torch.ones(3), means, A @ A.transpose(1, 2) + 0.05 * torch.eye(n, dtype=F64))


def _affine(gm, shift, scale, Q=None):
    """The exact law of (Q x - shift) / scale for x ~ gm."""
    Q = torch.eye(gm.n, dtype=F64) if Q is None else Q
    return GaussianMixture(gm.weights, (gm.means @ Q.T - shift) / scale, Q @ gm.covs @ Q.T / scale ** 2)


def test_isometric_encoder_has_no_deviation(tmp_path):
    gm = _gm()
    x = gm.sample(600, torch.Generator().manual_seed(1))
    Q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(2), dtype=F64))[0]
    enc = lambda v: v @ Q.T  # noqa: E731  (rotation: an isometry, d = D)
    squash = lambda v: torch.cat([v[:, :3] * 3.0, v[:, 3:] * 0.3], 1)  # noqa: E731  (anisotropic linear map)
    _, mx, sx = normalise(x)
    _, mz, sz = normalise(enc(x))
    _, ms, ss = normalise(squash(x))
    S = torch.diag(torch.tensor([3.0, 3, 3, 0.3, 0.3, 0.3], dtype=F64))
    dens = {"rot": _affine(gm, mz, sz, Q).as_denoiser(), "squash": _affine(gm, ms, ss, S).as_denoiser()}
    s = diagnose({"rot": enc, "squash": squash}, x, out=str(tmp_path), sigmas=[0.05, 0.3, 1.0, 3.0],
                 n_eval=600, n_probes=8, pixel_denoiser=_affine(gm, mx, sx).as_denoiser(), latent_denoisers=dens,
                 n_penalty=100, tangent_dim=6, n_neighbors=12)
    rot, sq = s["encoders"]["rot"], s["encoders"]["squash"]
    # same law up to a rotation: the FIR deviation is only Monte-Carlo noise (common probes are not shared)
    assert max(rot["d_r"]) < 0.05 and max(rot["d_i"]) < 0.05
    assert rot["tangential"]["anisotropy"] < 1e-6 and rot["curvature"]["curvature_rms"] < 1e-6
    assert rot["compression"]["predicted_dr_small_tau"] == 0
    # a strongly anisotropic linear map is flagged and deviates
    assert sq["tangential"]["anisotropy"] > 0.5 and sq["d_r"][0] > 0.5 and sq["d_r"][1] > 0.1
    assert s["verdict"]["best"] == "rot" and s["verdict"]["ranking"] == ["rot", "squash"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["verdict"]["best"] == "rot" and "normalisation" in saved
    for f in ("fisher_curves.png", "deviation.png", "penalties.png", "spectra.png", "curves_pixels.json"):
        assert (tmp_path / f).stat().st_size > 500


def _cli(argv):
    """Run the CLI entry point; return its exit code (0 when it returns normally)."""
    from latentgeo.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0


def test_cli_toy_exact(tmp_path):
    assert _cli(["fisher", "toy", "tangential", "--exact", "--params", "0.2", "--sigmas", "0.01,1", "--n-eval", "100",
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "toy_tangential.json").read_text())
    assert abs(res["rows"][0]["d_r"][0] - res["rows"][0]["exact_d_r"][0]) < 0.01


def test_cli_bad_toy_name_is_user_error(tmp_path, capsys):
    assert _cli(["fisher", "toy", "spiral", "--exact", "--out", str(tmp_path)]) == 2
    assert "unknown toy" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_diagnose_quick_with_trained_encoder(tmp_path):
    """End to end: a tiny trained latentgeo autoencoder folder on digits, `latentgeo diagnose --quick`, then rerun
    reuses the cached denoisers."""
    ae = pytest.importorskip("latentgeo.autoencoders")
    pytest.importorskip("latentgeo.diffusion")
    from latentgeo.data import load

    x = load("digits", n=300)
    ae.train_autoencoder("ae", x, latent_dim=8, steps=30, out=str(tmp_path / "ae"))
    args = ["diagnose", "--encoder", str(tmp_path / "ae"), "--data", "digits", "--out", str(tmp_path / "d"),
            "--quick", "--n", "300", "--steps", "60"]
    assert _cli(args) == 0
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["encoders"]["ae"]["latent_dim"] == 8 and s["denoisers"]["pixels"]["how"] == "trained"
    assert _cli(args) == 0
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["denoisers"]["pixels"]["how"] == "reused" and s["denoisers"]["ae"]["how"] == "reused"


def test_cli_curves_on_a_saved_denoiser(tmp_path):
    """`latentgeo fisher curves` on a (barely trained) saved EDM denoiser: files written, values finite."""
    diff = pytest.importorskip("latentgeo.diffusion")
    from latentgeo.checkpoint import save
    from latentgeo.data import load

    x = load("digits", n=64)
    den = diff.fit_denoiser(x, steps=5, batch_size=32, net_kwargs={"hidden": 16, "depth": 1})
    save(den, tmp_path / "den.safetensors")
    assert _cli(["fisher", "curves", "--denoiser", str(tmp_path / "den.safetensors"), "--data", "digits", "--n", "32",
                 "--n-sigmas", "3", "--probes", "2", "--out", str(tmp_path / "c")]) == 0
    from latentgeo.fisher import FisherCurves

    c = FisherCurves.load(tmp_path / "c" / "curves.json")
    assert c.n == 64 and len(c.sigma) == 3 and torch.isfinite(c.fir).all()
    assert (tmp_path / "c" / "curves.png").exists()
