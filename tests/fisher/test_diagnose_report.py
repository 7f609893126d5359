"""The diffusability report end to end: diagnose() with the new diagnostics on linear encoders whose answers are known,
the score's rotation invariance through the whole pipeline, and `latentgeo diagnose` on two encoders rendering its
report in a real browser."""
import json

import pytest
import torch

from latentgeo.fisher.diagnosis import diagnose
from latentgeo.report import browser_check, find_chromium
from latentgeo.report.diffusability import SECTIONS, write_diagnosis_report

torch.set_num_threads(1)
F64 = torch.float64
CHROMIUM = find_chromium()


def _data(n=240, D=12, k=4, seed=0):
    """Points near a k-dim linear subspace of R^D, plus a little isotropic noise (float64)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))[0][:, :k]
    c = torch.randn(n, k, generator=g, dtype=F64) * torch.tensor([3.0, 2.0, 1.5, 1.0], dtype=F64)[:k]
    return c @ basis.T + 0.05 * torch.randn(n, D, generator=g, dtype=F64)


def _pca(x, d):
    """(encoder, exact decoder on the span) of the top-d principal directions."""
    m = x.mean(0)
    V = torch.linalg.svd(x - m, full_matrices=False).Vh[:d]  # [d, D]
    return (lambda v: (v - m) @ V.T), (lambda z: z @ V + m), V


def _run(encs, x, decs=None, **kw):
    return diagnose(encs, x, fisher=False, decoders=decs, n_penalty=120, tangent_dim=4, n_neighbors=12,
                    n_geometry=240, **kw)


def test_score_is_invariant_to_a_latent_rotation_end_to_end():
    x = _data()
    enc, dec, _ = _pca(x, 6)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=F64))[0]
    s = _run({"pca": enc, "rotated": lambda v: enc(v) @ Q.T}, x,
             {"pca": dec, "rotated": lambda z: dec(z @ Q)})
    a, b = s["encoders"]["pca"], s["encoders"]["rotated"]
    assert a["score"] is not None and abs(a["score"] - b["score"]) < 1e-6
    for key in ("trustworthiness", "continuity", "distance_spearman"):
        assert abs(a["neighbourhood"][key] - b["neighbourhood"][key]) < 1e-9
    assert abs(a["tangential"]["anisotropy"] - b["tangential"]["anisotropy"]) < 1e-9
    # the exact decoder reconstructs the data up to the discarded (noise) directions
    assert a["reconstruction"]["mse"] < 0.01 and abs(a["reconstruction"]["mse"] - b["reconstruction"]["mse"]) < 1e-9


def test_anisotropic_and_rippled_encoders_score_below_pca(tmp_path):
    x = _data()
    enc, dec, _ = _pca(x, 6)
    S = torch.tensor([6.0, 3.0, 1.0, 0.5, 0.3, 0.2], dtype=F64)  # condition number 30
    s = _run({"pca": enc, "aniso": lambda v: enc(v) * S,
              "ripple": lambda v: enc(v) + 0.3 * torch.sin(4.0 * enc(v))},
             x, {"pca": dec, "aniso": lambda z: dec(z / S)}, out=str(tmp_path))
    e = s["encoders"]
    # closed forms: a linear map has zero exact curvature; PCA restricted to the data's span is close to an isometry
    assert e["pca"]["curvature"]["curvature_rms"] < 1e-9 and e["aniso"]["curvature"]["curvature_rms"] < 1e-9
    assert e["ripple"]["curvature"]["curvature_rms"] > 0.1
    assert e["aniso"]["tangential"]["anisotropy"] > 0.5 > 0.2 > e["pca"]["tangential"]["anisotropy"]
    assert e["pca"]["score"] > e["aniso"]["score"] and e["pca"]["score"] > e["ripple"]["score"]
    assert s["ranking"][0] == "pca" and s["verdict"]["best"] == "pca"
    assert e["ripple"]["reconstruction"] is None  # no decoder known for it
    # every penalty carries its error bar, and the timing of every part is recorded
    assert e["aniso"]["tangential"]["anisotropy_se"] > 0
    assert set(e["pca"]["timing_s"]) >= {"penalties", "spectrum", "equivariance", "neighbourhood", "reconstruction"}
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["ranking"] == s["ranking"] and saved["fisher"] is False
    html = write_diagnosis_report(tmp_path, saved).read_text()
    for title, _, _ in SECTIONS:
        assert title in html
    assert "skipped" in html  # the Fisher section says why it is empty


def test_decoder_of_the_wrong_shape_is_refused():
    from latentgeo.errors import LatentgeoError

    x = _data()
    enc, _, _ = _pca(x, 6)
    with pytest.raises(LatentgeoError, match="decoder gives samples of shape"):
        _run({"pca": enc}, x, {"pca": lambda z: z})
    with pytest.raises(LatentgeoError, match="not among the encoders"):
        _run({"pca": enc}, x, {"other": lambda z: z})


def _cli(argv):
    from latentgeo.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.mark.slow
def test_cli_diagnose_two_encoders_report_renders(tmp_path):
    """`latentgeo diagnose` on two tiny trained autoencoders (GPE and a VAE) with the Fisher part on: summary with
    both encoders and a ranking, report.html with every section, checked in headless Chromium when installed."""
    ae = pytest.importorskip("latentgeo.autoencoders")
    from latentgeo.data import load

    x = load("digits", n=300)
    ae.train_autoencoder("gpe", x, latent_dim=8, steps=25, out=str(tmp_path / "gpe"))
    ae.train_autoencoder("vae", x, latent_dim=8, steps=25, out=str(tmp_path / "vae"))
    out = tmp_path / "d"
    assert _cli(["diagnose", "--encoder", str(tmp_path / "gpe"), "--encoder", str(tmp_path / "vae"), "--data",
                 "digits", "--out", str(out), "--quick", "--n", "300", "--steps", "40", "--n-geometry", "200",
                 "--labels", "dataset", "--n-generation", "100", "--reference-flow-steps", "20"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert sorted(s["ranking"]) == ["gpe", "vae"]
    for name in ("gpe", "vae"):
        e = s["encoders"][name]
        assert e["d_r_median_mid"] is not None and e["score"] is not None
        assert e["reconstruction"]["psnr"] is not None  # the run's own decoder was found
        assert 0 <= e["neighbourhood"]["trustworthiness"] <= 1
        # issue 19: generation-side measures with standard errors, class structure from the labels, the reference
        it, ns, cs = e["interpolation"], e["noise_sensitivity"], e["class_structure"]
        assert it["alpha_0.5"]["fd"] >= 0 and it["alpha_0.5"]["fd_se"] > 0 and 0 <= it["alpha_0.25"]["recall"] <= 1
        assert "classifier trained on the data" in it["feature_space"] and it["n"] == 100
        assert ns["s_0.3"]["fd_se"] > 0 and cs["viv"] > 0 and cs["viv_se"] > 0 and cs["chance"] < cs["lnc"] <= 1
        assert e["reference_generator"]["fd_gen"] >= 0 and e["reference_generator"]["steps"] == 20
    report = out / "report.html"
    assert report.stat().st_size > 10_000
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    res = browser_check(report)
    assert res["images"] >= 4 and res["loaded"] == res["images"] and not res["bad"]
    want = (["Verdict", "Fisher information along the noise schedule", "Which numbers to trust"]
            + [t for t, _, _ in SECTIONS] + ["Cost"])
    assert res["sections"] == want
