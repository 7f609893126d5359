"""benchmarks/diffusability_zoo.py: its statistics against hand-computed values, its exact PCA-family decoders
against the PCA projection, and a tiny --quick run (JSON structure)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo():
    spec = importlib.util.spec_from_file_location("diffusability_zoo", ROOT / "benchmarks" / "diffusability_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["diffusability_zoo"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_spearman_hand_computed(zoo):
    # ties: x ranks [1.5, 1.5, 3, 4] vs [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert zoo.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    # one adjacent swap in each half: 1 - 6 * 4 / (5 * 24) = 0.8
    assert zoo.spearman([2, 1, 4, 3, 5], [1, 2, 3, 4, 5]) == pytest.approx(0.8, abs=1e-12)
    assert zoo.spearman([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]) == pytest.approx(-1.0, abs=1e-12)
    # NaN pairs dropped; constant side -> undefined
    assert zoo.spearman([1, float("nan"), 2, 3], [1, 9, 2, 3]) == pytest.approx(1.0)
    assert zoo.spearman([1, 1, 1], [1, 2, 3]) is None


def test_bootstrap_matches_exact_bootstrap_distribution(zoo):
    # x = [1, 2, 3], y = [1, 3, 2]. Of the 27 ordered resamples, 3 are constant (skipped); the 6 with indices
    # {0,1} and the 6 with {0,2} give rho = +1, the 6 with {1,2} give -1, the 6 permutations give 0.5.
    # So P(+1) = 1/2, P(-1) = 1/4, P(0.5) = 1/4 and the 95% percentile interval is [-1, 1].
    b = zoo.bootstrap_spearman([1, 2, 3], [1, 3, 2], n_boot=4000, seed=3)
    assert b["rho"] == pytest.approx(0.5)
    d = np.asarray(b["draws"])
    assert b["n_used"] == d.size and abs(d.size / 4000 - 24 / 27) < 5 * math.sqrt((24 / 27) * (3 / 27) / 4000)
    for v, p in ((1.0, 0.5), (-1.0, 0.25), (0.5, 0.25)):
        frac = float(np.isclose(d, v).mean())
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / d.size), (v, frac)
    assert (b["lo"], b["hi"]) == (-1.0, 1.0)
    # a perfectly monotone table: every non-degenerate resample has rho = 1
    m = zoo.bootstrap_spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_boot=300, seed=0)
    assert (m["rho"], m["lo"], m["hi"]) == (1.0, 1.0, 1.0)


def test_rank_position(zoo):
    assert zoo.rank_position(3.0, [2, 3, 4, 5]) == pytest.approx((1 + 0.5) / 4)
    assert zoo.rank_position(0.0, [2, 3, 4, 5]) == 0.0
    assert zoo.rank_position(9.0, [2, 3, 4, 5]) == 1.0


def test_leave_one_out_hand_computed(zoo):
    gap = [1, 2, 3, 4, 5]
    # 'a' is monotone in the gap on every fold (|rho| = 1); 'c' has training |rho| 0.8 or 0.6 (hand: dropping
    # items 0..3 leaves one swap, dropping item 4 leaves two) so top-1 always picks 'a' with sign +; the left-out
    # item i sits at rank position i / 4 among the other four: predictions i/4 - 1/2, Spearman 1.
    table = {"a": [10, 20, 30, 40, 50], "c": [2, 1, 4, 3, 5]}
    r = zoo.leave_one_out(table, gap, k=1)
    assert r["chosen"] == [[("a", 1.0)]] * 5
    np.testing.assert_allclose(r["predictions"], [-0.5, -0.25, 0.0, 0.25, 0.5])
    assert r["spearman"] == pytest.approx(1.0)
    # a feature that decreases with the gap is chosen with sign -1 and predicts equally well
    r2 = zoo.leave_one_out({"b": [5, 4, 3, 2, 1]}, gap, k=1)
    assert r2["chosen"][0] == [("b", -1.0)] and r2["spearman"] == pytest.approx(1.0)
    # top-2 averages a and c: fold 4 (item 4 left out): a -> 1 - 1/2, c = 5 above [2, 1, 4, 3] -> 1/2; mean 1/2
    r3 = zoo.leave_one_out(table, gap, k=2)
    assert r3["predictions"][4] == pytest.approx(0.5)
    # fold 0: a -> -1/2; c = 2 among [1, 4, 3, 5] -> 1/4 - 1/2 = -1/4; mean -3/8
    assert r3["predictions"][0] == pytest.approx(-0.375)
    # the left-out target is never used: changing it leaves its own prediction unchanged
    r4 = zoo.leave_one_out(table, [1, 2, 3, 4, 500], k=2)
    assert r4["predictions"][4] == pytest.approx(r3["predictions"][4])


def test_flatten_numeric_and_filter(zoo):
    e = {"d_r_median_mid": 0.5, "tangential": {"anisotropy": 0.2, "anisotropy_se": 0.01},
         "curvature": {"normal_defined": True, "x": None, "list": [1, 2]}, "timing_s": {"fisher": 3.0},
         "equivariance": {"scale": {"error": 0.1, "se": 0.02, "n": 4}}, "name": "x", "bad": float("nan")}
    f = zoo.flatten_numeric(e)
    assert f == {"d_r_median_mid": 0.5, "tangential.anisotropy": 0.2, "tangential.anisotropy_se": 0.01,
                 "timing_s.fisher": 3.0, "equivariance.scale.error": 0.1, "equivariance.scale.se": 0.02,
                 "equivariance.scale.n": 4.0}
    kept = sorted(k for k in f if zoo.is_diagnostic(k))
    assert kept == ["d_r_median_mid", "equivariance.scale.error", "tangential.anisotropy"]


def test_pca_family_decoders_are_exact(zoo):
    torch.manual_seed(0)
    # data near a 16-dim subspace of 28x28 images
    basis = torch.linalg.qr(torch.randn(784, 20, dtype=torch.float64))[0]
    x = (torch.randn(300, 20, dtype=torch.float64) * torch.linspace(3, 0.5, 20)) @ basis.T
    x = x.float().reshape(300, 1, 28, 28)
    ref = None
    for variant in ("plain", "rotated", "aniso", "ripple"):
        enc = zoo.make_pca_family(x, 16, variant, seed=0)
        dec = zoo.LinearFamilyDecoder(enc, x.shape[1:])
        rec = dec(enc(x)).double()
        if ref is None:  # the plain PCA reconstruction: the orthogonal projection onto the top-16 subspace
            X = x.reshape(300, -1).double()
            mu = X.mean(0)
            V = torch.linalg.svd(X - mu, full_matrices=False)[2][:16]
            ref = (mu + (X - mu) @ V.T @ V).reshape(rec.shape)
        err = float((rec - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, (variant, err)
    # the ripple is strictly monotone per coordinate (eps * omega = 0.9 < 1)
    enc = zoo.make_pca_family(x, 16, "ripple", seed=0)
    assert torch.allclose(enc.eps * enc.omega, torch.full((16,), 0.9), atol=1e-6)
    # the rotated encoder's latents are an orthogonal map of the plain ones
    zp, zr = zoo.make_pca_family(x, 16, "plain", 0)(x).double(), zoo.make_pca_family(x, 16, "rotated", 0)(x).double()
    Q = torch.linalg.lstsq(zp, zr).solution
    assert torch.allclose(Q.T @ Q, torch.eye(16, dtype=torch.float64), atol=1e-4)


def test_family_b_transforms_are_exact(zoo):
    # every family-B encoder T(E(x)) decodes through D(T^-1 z) to the base's reconstruction; the rotation keeps
    # distances, the checkerboard keeps distances, the scaling has the named condition number
    torch.manual_seed(0)
    e, d = zoo.ConvEncoder(4, 8).eval(), zoo.ConvDecoder(4, 8).eval()
    x = torch.rand(20, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        z = e(x)
        base = d(z)
        zstd = z.transpose(0, 1).reshape(4, -1).std(1)
        for kind in zoo.B_TRANSFORMS:
            t = zoo.Transformed(e, d, kind, 4, zstd, seed=0)
            zt = t.encode(x)
            assert torch.allclose(t.decode(zt), base, atol=1e-5), kind
            if kind in ("rot", "checker", "perm"):
                assert torch.allclose(torch.cdist(zt.flatten(1), zt.flatten(1)), torch.cdist(z.flatten(1), z.flatten(1)),
                                      atol=1e-4), kind
            if kind == "noisech":
                assert zt.shape[1] == 8 and torch.equal(t.encode(x), zt)  # deterministic pseudo-noise
        s30 = zoo.Transformed(e, d, "scale30", 4, zstd, seed=0).s
        assert float(s30.max() / s30.min()) == pytest.approx(30.0, rel=1e-5)


def test_fixed_score_and_family_holdout_hand_computed(zoo):
    rows = {"p": {"interpolation.alpha_0.5.fd": 1.0, "noise_sensitivity.s_0.3.fd_minus_recon": 0.1,
                  "class_structure.lnc": 0.9},
            "q": {"interpolation.alpha_0.5.fd": 2.0, "noise_sensitivity.s_0.3.fd_minus_recon": 0.3,
                  "class_structure.lnc": 0.8},
            "r": {"interpolation.alpha_0.5.fd": 3.0, "noise_sensitivity.s_0.3.fd_minus_recon": 0.2}}
    sc = zoo.score_of(rows, ["p", "q", "r"])
    # rank positions (mid-rank fraction among the 3, or 2 for lnc): p (0.5 + 0 + 0.25... computed by hand:
    # fd: p 1/6, q 3/6, r 5/6; noise: p 1/6, q 5/6, r 3/6; -lnc over {p, q}: p 1/4, q 3/4 (r has none)
    assert sc["p"] == pytest.approx(-(1 / 6 + 1 / 6 + 1 / 4) / 3)
    assert sc["q"] == pytest.approx(-(3 / 6 + 5 / 6 + 3 / 4) / 3)
    assert sc["r"] == pytest.approx(-(5 / 6 + 3 / 6) / 2)
    # held-out families: a measure monotone in the target everywhere is chosen on the others and ranks each family
    fams = ["A"] * 4 + ["B"] * 4
    y = [1, 2, 3, 4, 5, 6, 7, 8]
    r = zoo.leave_one_family_out({"good": [10, 20, 30, 40, 50, 60, 70, 80], "noise": [3, 1, 4, 1, 5, 9, 2, 6]},
                                 y, fams, k=1, min_items=3)
    assert r["per_family"]["A"]["chosen"] == [("good", 1.0)] and r["mean"] == pytest.approx(1.0)


TINY = dict(n_train=300, n_test=160, ae_steps=12, batch=32, lr=2e-3, width=4, mlp_latent=8, flow_steps=10,
            flow_batch=32, flow_width=8, mlp_hidden=16, n_gen=80, ode_steps=2, n_train_seeds=2, n_sample_seeds=2,
            clf_steps=10, n_generation=40, n_penalty=10, n_geometry=40, n_equivariance=4, n_boot=50,
            reference_fraction=0.1)
NAMES = "a_c4,a_c2,a_c4_ck50,b_a_c4_rot,b_a_c4_scale30,b_a_c4_checker,c_pca,c_pca_rot"


def test_quick_run_structure(zoo, tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.PRESETS, "quick", TINY)  # the --quick pipeline at smaller sizes (test time)
    out = tmp_path / "zoo.json"
    r = zoo.main(["--quick", "--cache", str(tmp_path / "cache"), "--out", str(out), "--encoders", NAMES,
                  "--mlp-truth"])
    r = json.loads(out.read_text())
    mg = r["mlp_generator"]  # the second generator covers exactly the spatial families
    assert mg["encoders"] == [n for n in NAMES.split(",") if not n.startswith("c_")]
    assert -1 <= mg["spearman_mlp_vs_conv_fd_gen"]["rho"] <= 1 and set(mg["controls"]["a_c4"]) == {
        "rot", "scale30", "checker"}
    assert r["status"] == "complete" and out.with_suffix(".png").stat().st_size > 0
    v = r["validation"]
    assert v["n_encoders"] == 8 and v["n_families"] == 3
    for k in ("seed_ceiling_spearman", "held_out_family_spearman_fd_gen", "pooled_spearman_fd_gen",
              "diagnose_cost_ratio"):
        assert k in v
    assert v["diagnose_cost_ratio"] > 0
    for n in NAMES.split(","):
        t = r["table"][n]["truth"]
        assert t["gap"] == pytest.approx(t["fd_gen"] - t["fd_recon"])
        assert len(t["cells"]) == 4 and t["fd_gen"] == pytest.approx(np.mean(list(t["cells"].values())))
        assert t["generator"] == ("MLP flow" if n.startswith("c_") else "conv flow")
        assert "interpolation.alpha_0.5.fd" in r["table"][n]["diagnostics"]
    # exact-decoder transforms reconstruct like their base
    fr = [r["table"][n]["truth"]["fd_recon"] for n in ("a_c4", "b_a_c4_rot", "b_a_c4_scale30", "b_a_c4_checker")]
    assert max(fr) - min(fr) < 1e-3 * max(1.0, fr[0])
    assert set(r["controls"]["a_c4"]) == {"rot", "scale30", "checker"}
    # resumable: a second run reads every cached stage
    r2 = zoo.main(["--quick", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "zoo2.json"),
                   "--encoders", NAMES])
    assert r2["table"]["a_c4"]["truth"] == r["table"]["a_c4"]["truth"]
    assert r2["table"]["c_pca"]["diagnostics"] == r["table"]["c_pca"]["diagnostics"]
