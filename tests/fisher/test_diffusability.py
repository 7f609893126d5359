"""Peer diffusability estimators (latentgeo.fisher.diffusability) against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.diffusability import (DEFAULT_WEIGHTS, band_energy_divergence, dct_band_energies,
                                            diffusability_score, equivariance_errors, latent_statistics,
                                            neighbourhood_metrics, penalty_error_bars, rank_encoders,
                                            reconstruction_metrics, score_features)

torch.set_num_threads(1)
F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _smooth(n, size, g):
    """Low-pass images: white noise circularly averaged over 5x5 windows."""
    w = torch.randn(n, 1, size, size, generator=g, dtype=F64)
    return F.conv2d(F.pad(w, (2, 2, 2, 2), mode="circular"), torch.ones(1, 1, 5, 5, dtype=F64) / 25)


# ---------------------------------------------------------------------------------------------------------------
# DCT band energies and divergence
# ---------------------------------------------------------------------------------------------------------------
def test_dct_is_orthonormal_so_energy_is_preserved():
    from latentgeo.fisher.diffusability import _dct_matrix

    M = _dct_matrix(7, "cpu")
    torch.testing.assert_close(M @ M.T, torch.eye(7, dtype=F64), atol=1e-13, rtol=0)
    # DCT-II basis by hand: row 1 of the 4-point transform
    n = torch.arange(4, dtype=F64)
    torch.testing.assert_close(_dct_matrix(4, "cpu")[1], math.sqrt(2 / 4) * torch.cos(math.pi * (n + 0.5) / 4), atol=1e-14, rtol=0)


@pytest.mark.parametrize("shape", [(600, 2, 12, 12), (600, 1, 8, 16), (600, 40)])
def test_white_noise_bands_are_flat(shape):
    x = torch.randn(*shape, generator=_gen(1), dtype=F64)
    r = dct_band_energies(x, n_bands=6)
    assert len(r["bands"]) == 6 and len(r["band_edges"]) == 7
    assert sum(r["bands"]) == pytest.approx(1.0, abs=1e-12)
    for b, se in zip(r["bands"], r["per_band_se"]):
        assert 0 < se < 0.02
        assert abs(b - 1 / 6) < 4 * se


def test_band_se_matches_spread_over_repeats():
    vals = [dct_band_energies(torch.randn(200, 1, 8, 8, generator=_gen(s), dtype=F64), 4)["bands"][0]
            for s in range(30)]
    spread = torch.tensor(vals).std().item()
    se = dct_band_energies(torch.randn(200, 1, 8, 8, generator=_gen(99), dtype=F64), 4)["per_band_se"][0]
    assert 0.6 < se / spread < 1.6


def test_smooth_images_put_energy_in_low_bands_and_diverge_from_white_noise():
    g = _gen(2)
    s = _smooth(400, 16, g)
    r = dct_band_energies(s, n_bands=8)
    assert r["bands"][0] + r["bands"][1] > 0.8
    assert r["bands"][-1] < 0.01
    white = torch.randn(400, 1, 16, 16, generator=g, dtype=F64)
    d = band_energy_divergence(s, white, n_bands=8)
    assert d["divergence"] > 0.5 and d["divergence"] > 10 * d["divergence_se"]
    # KL computed by hand from the returned band vectors
    p, q = torch.tensor(d["bands_data"]), torch.tensor(d["bands_latent"])
    assert d["divergence"] == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)


def test_divergence_between_white_noise_sets_is_about_zero():
    g = _gen(3)
    a = torch.randn(400, 3, 16, 16, generator=g, dtype=F64)
    b = torch.randn(400, 1, 16, 16, generator=g, dtype=F64)
    d = band_energy_divergence(a, b)
    assert d["align"] == "resample" and d["reason"] is None
    assert abs(d["divergence"]) < 5e-3 and d["divergence"] < 5 * d["divergence_se"] + 1e-3
    # a 4x4 white latent: area down-sampling keeps white noise white
    z = torch.randn(400, 4, 4, 4, generator=g, dtype=F64)
    d2 = band_energy_divergence(a, z, n_bands=8)
    assert d2["divergence"] < 0.01
    d3 = band_energy_divergence(a, z, n_bands=8, align="normalised")
    assert d3["align"] == "normalised" and d3["divergence"] < 0.01


def test_divergence_none_for_vectors_or_tiny_grids():
    g = _gen(4)
    x = torch.randn(50, 1, 8, 8, generator=g)
    v = band_energy_divergence(x, torch.randn(50, 6, generator=g))
    assert v["divergence"] is None and "spatial" in v["reason"]
    v2 = band_energy_divergence(torch.randn(50, 64, generator=g), torch.randn(50, 6, generator=g))
    assert v2["divergence"] is None and v2["reason"]
    t = band_energy_divergence(x, torch.randn(50, 4, 2, 2, generator=g), n_bands=8)
    assert t["divergence"] is None and "fewer bands" in t["reason"]


# ---------------------------------------------------------------------------------------------------------------
# equivariance
# ---------------------------------------------------------------------------------------------------------------
def test_identity_and_average_pooling_are_equivariant():
    x = torch.randn(20, 2, 8, 8, generator=_gen(5), dtype=F64)
    for enc in (lambda t: t, lambda t: F.avg_pool2d(t, 2)):
        r = equivariance_errors(enc, x, n=16)
        for t in ("scale", "hflip", "vflip", "rot90"):
            assert r[t]["reason"] is None and r[t]["n"] == 16
            assert r[t]["error"] < 1e-12


def test_asymmetric_conv_breaks_flip_equivariance_by_the_closed_form():
    k = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=F64)[None, None]

    def enc(t):
        return F.conv2d(t, k)

    x = torch.randn(64, 1, 32, 32, generator=_gen(6), dtype=F64)
    r = equivariance_errors(enc, x, n=64)
    # white x: E(flip x) - flip(E x) = x[., p] - x[., p+1] (variance 2) against |E x|^2 per entry 1 + 4 = 5
    assert r["hflip"]["error"] == pytest.approx(math.sqrt(2 / 5), rel=0.02)
    assert r["vflip"]["error"] > 0.5
    assert r["hflip"]["se"] < 0.01


def test_equivariance_skips_with_reasons():
    g = _gen(7)
    # odd sizes: no 2x2 down-sampling; non-square: no rot90
    r = equivariance_errors(lambda t: t, torch.randn(4, 1, 7, 6, generator=g))
    assert r["scale"]["error"] is None and "even" in r["scale"]["reason"]
    assert r["rot90"]["error"] is None and "square" in r["rot90"]["reason"]
    assert r["hflip"]["error"] == 0.0

    def fixed_size(t):
        if t.shape[-1] != 8:
            raise RuntimeError("expected 8x8 input")
        return t

    r2 = equivariance_errors(fixed_size, torch.randn(4, 1, 8, 8, generator=g))
    assert r2["scale"]["error"] is None and "expected 8x8" in r2["scale"]["reason"]
    assert r2["rot90"]["error"] == 0.0
    r3 = equivariance_errors(lambda t: t.flatten(1)[:, :5], torch.randn(4, 1, 8, 8, generator=g))
    assert all(v["error"] is None and v["reason"] == "latent has no spatial layout" for v in r3.values())


# ---------------------------------------------------------------------------------------------------------------
# latent statistics
# ---------------------------------------------------------------------------------------------------------------
def _pr_expected(lam, n):
    """E of the plug-in participation ratio to O(1/n) for Gaussian data (Wishart moments, n - 1 dof)."""
    n = n - 1
    t1, t2 = sum(lam), sum(v * v for v in lam)
    return (t1 ** 2 + 2 * t2 / n) / (t2 * (1 + 1 / n) + t1 ** 2 / n)


def test_participation_ratio_isotropic_and_diagonal():
    g = _gen(8)
    z = torch.randn(4000, 8, generator=g, dtype=F64) * 3.0
    s = latent_statistics(z)
    assert s["dim"] == 8 and s["participation_ratio"] == pytest.approx(_pr_expected([9.0] * 8, 4000), rel=0.01)
    assert s["participation_ratio"] == pytest.approx(8, rel=0.02)
    assert s["scale_factor"] == pytest.approx(1 / 3, rel=0.02)
    lam = [10, 5, 3, 0.5, 0.3, 0.1, 0.02, 0.01]
    zd = torch.randn(4000, 8, generator=g, dtype=F64) * torch.tensor(lam, dtype=F64).sqrt()
    sd = latent_statistics(zd)
    exact = sum(lam) ** 2 / sum(v * v for v in lam)
    assert sd["participation_ratio"] == pytest.approx(exact, rel=0.05)
    assert sd["participation_ratio"] == pytest.approx(_pr_expected(lam, 4000), rel=0.03)
    assert sd["n_components_90"] == 3 and sd["n_components_99"] == 5
    assert sd["global_std"] == pytest.approx(math.sqrt(sum(lam) / 8), rel=0.03)


def test_latent_statistics_invariant_to_rotation_and_channel_stats():
    g = _gen(9)
    z = torch.randn(300, 6, generator=g, dtype=F64) * torch.arange(1, 7, dtype=F64) + 2.0
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))[0]
    a, b = latent_statistics(z), latent_statistics(z @ Q.T)
    for key in ("participation_ratio", "global_std", "scale_factor"):
        assert a[key] == pytest.approx(b[key], rel=1e-10)
    for key in ("n_components_90", "n_components_99", "dim"):
        assert a[key] == b[key]
    zi = torch.randn(200, 3, 4, 4, generator=g, dtype=F64) * torch.tensor([1.0, 2.0, 0.5], dtype=F64)[:, None, None]
    si = latent_statistics(zi + torch.tensor([0.0, 1.0, -1.0], dtype=F64)[:, None, None])
    assert si["channel_std"] == pytest.approx([1.0, 2.0, 0.5], rel=0.08)
    assert si["channel_mean"] == pytest.approx([0.0, 1.0, -1.0], abs=0.15)


# ---------------------------------------------------------------------------------------------------------------
# neighbourhoods
# ---------------------------------------------------------------------------------------------------------------
def test_orthogonal_encoder_preserves_neighbourhoods_and_permutation_breaks_them():
    g = _gen(10)
    x = torch.randn(300, 10, generator=g, dtype=F64)
    Q = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=F64))[0]
    r = neighbourhood_metrics(x, 2.5 * x @ Q.T, k=8)
    for key in ("trustworthiness", "continuity", "distance_spearman", "knn_overlap"):
        assert r[key] == pytest.approx(1.0, abs=1e-12)
        assert r[key + "_se"] == pytest.approx(0.0, abs=1e-12)
    bad = neighbourhood_metrics(x, (x @ Q.T)[torch.randperm(300, generator=g)], k=8)
    assert bad["trustworthiness"] < 0.8 and bad["continuity"] < 0.8
    assert abs(bad["distance_spearman"]) < 0.3 and bad["knn_overlap"] < 0.2
    assert 0 < bad["trustworthiness_se"] < 0.1


def test_neighbourhood_subsample_and_k_clamp():
    g = _gen(11)
    x = torch.randn(40, 1, 4, 4, generator=g)
    r = neighbourhood_metrics(x, x[:, :, :2], k=30, max_points=30, seed=1)
    assert r["n"] == 30 and r["k"] == 14 and r["k_requested"] == 30
    assert r["trustworthiness_se"] is None  # half-samples of 15 points cannot hold 14 neighbours


# ---------------------------------------------------------------------------------------------------------------
# reconstruction and error bars
# ---------------------------------------------------------------------------------------------------------------
def test_reconstruction_perfect_and_noisy():
    g = _gen(12)
    x = torch.rand(200, 1, 12, 12, generator=g, dtype=F64) * 2 - 1
    p = reconstruction_metrics(x, x.clone())
    assert p["mse"] == 0.0 and p["psnr"] is None and "infinite" in p["note"]
    assert p["ssim"] == pytest.approx(1.0, abs=1e-12)
    s = 0.1
    r = reconstruction_metrics(x, x + s * torch.randn(x.shape, generator=g, dtype=F64))
    assert abs(r["mse"] - s * s) < 4 * r["mse_se"]
    assert r["psnr"] == pytest.approx(10 * math.log10(4 / s ** 2), abs=0.1)
    assert r["psnr_se"] == pytest.approx(10 / math.log(10) * r["mse_se"] / r["mse"], rel=1e-12)
    assert r["ssim"] < 0.99
    v = reconstruction_metrics(x.flatten(1), x.flatten(1) + 0.5)
    assert v["ssim"] is None and v["mse"] == pytest.approx(0.25, abs=1e-12)


def test_penalty_error_bars_by_hand():
    r = penalty_error_bars(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert r == {"mean": 2.5, "se": pytest.approx(math.sqrt(5 / 3) / 2), "n": 4}
    assert penalty_error_bars([7.0])["se"] is None


# ---------------------------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------------------------
def test_score_renormalises_and_ranks():
    only_dr = {"d_r_median_mid": 0.5}
    # f = 0.5 / 1.5 with weight 1 over the only present feature
    assert diffusability_score(only_dr) == pytest.approx(-1 / 3, abs=1e-12)
    assert diffusability_score({}) is None
    assert diffusability_score(only_dr, weights={"knn_overlap": 1.0}) is None
    e = {"d_r_median_mid": 0.5, "neighbourhood": {"trustworthiness": 0.9, "continuity": 0.8,
                                                  "distance_spearman": 0.6, "knn_overlap": 0.5}}
    # (1 * 1/3 + 0.25 * (0.1 + 0.2 + 0.2 + 0.5)) / 2
    assert diffusability_score(e) == pytest.approx(-(1 / 3 + 0.25) / 2, abs=1e-12)
    ranks = rank_encoders({"b": only_dr, "a": dict(only_dr), "c": {}, "d": {"d_r_median_mid": 0.1}})
    assert ranks == ["d", "a", "b", "c"]
    f = score_features(e)
    assert set(f) == set(DEFAULT_WEIGHTS) and f["band_energy_divergence"] is None


def _entry(encoder, x, T, decoder_fit=True):
    from latentgeo.fisher.penalties import curvature_penalty, tangential_distortion

    with torch.no_grad():
        z = encoder(x)
    tan = tangential_distortion(encoder, x, tangents=T)
    curv = curvature_penalty(encoder, x, tangents=T, step=0.05)
    zf, xf = z.reshape(z.shape[0], -1), x.reshape(x.shape[0], -1)
    B = torch.linalg.lstsq(torch.cat([zf, torch.ones_like(zf[:, :1])], 1), xf).solution
    x_hat = (torch.cat([zf, torch.ones_like(zf[:, :1])], 1) @ B).reshape(x.shape)
    return {"d_r_median_mid": 0.3,
            "tangential": {"anisotropy": tan["anisotropy"], "distortion": tan["distortion"]},
            "curvature": {"normal_defined": curv["normal_defined"]},
            "curvature_at_scale": {"relative_normal_curvature": curv["relative_normal_curvature"],
                                   "relative_curvature": curv["relative_curvature"]},
            "neighbourhood": neighbourhood_metrics(x, z, k=8),
            "latent_stats": latent_statistics(z),
            "spectrum": band_energy_divergence(x, z, n_bands=4),
            "equivariance": equivariance_errors(encoder, x, n=64),
            "reconstruction": reconstruction_metrics(x, x_hat) if decoder_fit else None}


def test_score_is_rotation_invariant_end_to_end_vector_latent():
    from latentgeo.fisher.penalties import tangent_basis

    g = _gen(13)
    # images on a 2-D smooth manifold: 8x8 pictures of (u, v)
    uv = torch.rand(160, 2, generator=g, dtype=F64) * 2 - 1
    grid = torch.linspace(-1, 1, 8, dtype=F64)
    x = torch.tanh(uv[:, :1, None, None] * grid[None, None, :, None] + uv[:, 1:, None, None] * grid[None, None, None])
    T = tangent_basis(x, 2, n_neighbors=12)
    A = torch.randn(5, 64, generator=g, dtype=F64) / 4
    Q = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))[0]

    def enc(t):
        return torch.tanh(t.reshape(t.shape[0], -1) @ A.T)

    def enc_rot(t):
        return enc(t) @ Q.T

    e1, e2 = _entry(enc, x, T), _entry(enc_rot, x, T)
    f1, f2 = score_features(e1), score_features(e2)
    assert f1["band_energy_divergence"] is None and f1["equivariance"] is None
    for k in f1:
        assert (f1[k] is None) == (f2[k] is None)
        if f1[k] is not None:
            assert f1[k] == pytest.approx(f2[k], abs=1e-6), k
    s1, s2 = diffusability_score(e1), diffusability_score(e2)
    assert s1 == pytest.approx(s2, abs=1e-6)
    # and the score does see encoders: a squashing encoder scores differently
    e3 = _entry(lambda t: torch.tanh(4 * enc(t)), x, T)
    assert abs(diffusability_score(e3) - s1) > 1e-3


def test_score_is_invariant_to_channel_rotation_of_image_latents():
    g = _gen(14)
    x = _smooth(96, 8, g)
    W = torch.randn(4, 1, 2, 2, generator=g, dtype=F64)
    Q = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))[0]

    def enc(t):
        return torch.tanh(F.conv2d(t, W, stride=2))  # [N, 4, 4, 4]

    def enc_rot(t):
        return torch.einsum("dc,nchw->ndhw", Q, enc(t))

    from latentgeo.fisher.penalties import tangent_basis

    T = tangent_basis(x, 3, n_neighbors=12)
    e1, e2 = _entry(enc, x, T), _entry(enc_rot, x, T)
    assert e1["spectrum"]["divergence"] is not None and e1["equivariance"]["hflip"]["error"] > 0
    assert diffusability_score(e1) == pytest.approx(diffusability_score(e2), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    g = _gen(15)
    x = torch.randn(20, 1, 8, 8, generator=g)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(LatentgeoError, match="NaN"):
        dct_band_energies(nan)
    with pytest.raises(LatentgeoError, match="NaN"):
        latent_statistics(nan)
    with pytest.raises(LatentgeoError, match="NaN"):
        reconstruction_metrics(x, nan)
    with pytest.raises(LatentgeoError, match="NaN"):
        penalty_error_bars(torch.tensor([1.0, float("nan")]))
    with pytest.raises(LatentgeoError, match="shape"):
        dct_band_energies(torch.randn(20, 8, 8))
    with pytest.raises(LatentgeoError, match="at least 2"):
        dct_band_energies(x[:1])
    with pytest.raises(LatentgeoError, match="at least 2"):
        latent_statistics(x[:1])
    with pytest.raises(LatentgeoError, match="fewer bands"):
        dct_band_energies(torch.randn(20, 1, 2, 2, generator=g), n_bands=8)
    with pytest.raises(LatentgeoError, match="n_bands"):
        dct_band_energies(x, n_bands=1)
    with pytest.raises(LatentgeoError, match="no variance"):
        dct_band_energies(torch.ones(5, 1, 8, 8))
    with pytest.raises(LatentgeoError, match="no variance"):
        latent_statistics(torch.ones(5, 3))
    with pytest.raises(LatentgeoError, match="paired"):
        neighbourhood_metrics(x, x[:10])
    with pytest.raises(LatentgeoError, match="at least 4"):
        neighbourhood_metrics(x[:3], x[:3])
    with pytest.raises(LatentgeoError, match="same samples"):
        reconstruction_metrics(x, x[:, :, :4])
    with pytest.raises(LatentgeoError, match="data_range"):
        reconstruction_metrics(x, x, data_range=0)
    with pytest.raises(LatentgeoError, match="transform"):
        equivariance_errors(lambda t: t, x, transforms=("shear",))
    with pytest.raises(LatentgeoError, match="not a tensor"):
        equivariance_errors(lambda t: (t,), x)
    with pytest.raises(LatentgeoError, match="align"):
        band_energy_divergence(x, x, align="nope")
    with pytest.raises(LatentgeoError, match="unknown score feature"):
        diffusability_score({"d_r_median_mid": 0.1}, weights={"fid": 1.0})
    with pytest.raises(LatentgeoError, match="empty"):
        penalty_error_bars([])
