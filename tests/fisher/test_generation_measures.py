"""Issue 19 measures against closed forms: decoder noise sensitivity of an orthogonal linear decoder, neighbour
interpolations of an isotropic Gaussian latent through a linear decoder, VIV of a Gaussian mixture, LNC of separated
clusters; k-NN precision / recall and slerp basics; the input checks."""
from __future__ import annotations

import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.diagnosis import diagnose, normalise
from latentgeo.fisher.diffusability import (feature_frechet, knn_precision_recall, latent_neighbour_consistency,
                                            slerp, viv)

F64 = torch.float64


def _linear_case(lam, n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    d = len(lam)
    z = torch.randn(n, d, generator=g, dtype=F64) * torch.tensor(lam, dtype=F64).sqrt()
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0] * scale
    Qi = torch.linalg.inv(Q)
    return z @ Q.T, (lambda v: v @ Qi.T), (lambda zz: zz @ Q.T), z


def test_noise_sensitivity_orthogonal_decoder_closed_form():
    # z ~ N(0, diag(lam)), x = Q z (Q orthogonal), identity features (vector data). Noise s * eps in the normalised
    # latent is s * c * eps in z (c: the global scale of normalise), so decode(z + s c eps) ~ N(0, Q (L + s^2 c^2) Q^T)
    # and FD against the data = sum_i (sqrt(lam_i + s^2 c^2) - sqrt(lam_i))^2 (Frechet distance of Gaussians).
    lam = [4.0, 1.0, 0.25]
    x, enc, dec, z = _linear_case(lam, 8000, 0)
    c = normalise(z)[2]
    s = diagnose({"lin": enc}, x, decoders={"lin": dec}, fisher=False, n_generation=4000, n_penalty=16,
                 n_geometry=64, interp_alphas=(0.5,), noise_scales=(0.3, 1.0), seed=0)
    ns = s["encoders"]["lin"]["noise_sensitivity"]
    for sc in (0.3, 1.0):
        exact = sum((math.sqrt(l + (sc * c) ** 2) - math.sqrt(l)) ** 2 for l in lam)
        got = ns[f"s_{sc:g}"]
        # FD(recon) of an exact decoder is the finite-sample FD of two samples of one law: it is the bias to remove
        assert abs(got["fd_minus_recon"] - exact) < 4 * got["fd_minus_recon_se"] + 0.01, (sc, got, exact)
    assert ns["s_1"]["fd"] > ns["s_0.3"]["fd"] > ns["fd_recon"]
    assert ns["fd_recon"] < 0.02  # an exact decoder


def test_interpolation_isotropic_gaussian_linear_decoder():
    # z ~ N(0, I_2), x = 10 Q z. With a flat partner draw (temperature -> inf) the partner is one of the k latents of
    # closest direction, chosen independently of the norms (direction and norm of a Gaussian are independent), so the
    # slerp s has |s| = (1 - a)|z_a| + a|z_b| with independent chi_2 norms and a uniform direction:
    # Cov(s) = c I, c = E|s|^2 / 2 = 1 - 2a(1 - a)(1 - mu^2 / 2), mu = E chi_2 = sqrt(pi / 2); decoded through
    # 10 Q: FD against the data = 2 * 100 * (sqrt(c) - 1)^2.
    x, enc, dec, _ = _linear_case([1.0, 1.0], 6000, 0, scale=10.0)
    s = diagnose({"g": enc}, x, decoders={"g": dec}, fisher=False, n_generation=3000, n_penalty=16, n_geometry=64,
                 interp_temperature=1e9, interp_alphas=(0.5, 0.25), noise_scales=(0.1,), seed=0)
    it = s["encoders"]["g"]["interpolation"]
    for a in (0.5, 0.25):
        c = 1 - 2 * a * (1 - a) * (1 - math.pi / 4)
        exact = 200 * (math.sqrt(c) - 1) ** 2
        got = it[f"alpha_{a:g}"]
        # the SE covers the interpolants only; the shared reference adds about as much again
        assert abs(got["fd_minus_recon"] - exact) < 3 * math.sqrt(2) * got["fd_minus_recon_se"], (a, got, exact)
        assert 0.5 < got["precision"] <= 1 and 0.5 < got["recall"] <= 1
    assert it["alpha_0.5"]["fd"] > it["fd_recon"]


def test_viv_gaussian_mixture_closed_form():
    # three classes, common within-class covariance C = R diag(lam) R^T, far-apart means:
    # VIV = (pi/2) sum_i sqrt(lam_i) whatever the means (they are removed per class)
    g = torch.Generator().manual_seed(1)
    lam = torch.tensor([9.0, 1.0, 0.25, 0.01], dtype=F64)
    R = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))[0]
    y = torch.randint(0, 3, (6000,), generator=g)
    means = 50 * torch.randn(3, 4, generator=g, dtype=F64)
    z = means[y] + (torch.randn(6000, 4, generator=g, dtype=F64) * lam.sqrt()) @ R.T
    r = viv(z, y, n_boot=30, seed=0)
    exact = math.pi / 2 * float(lam.sqrt().sum())
    assert abs(r["viv"] - exact) < 4 * r["viv_se"] + 1e-3, (r, exact)
    assert r["viv_se"] < 0.02 * exact and r["n_classes"] == 3
    # the flow-matching derivation behind (pi/2) sqrt(lam): int_0^1 lam / ((1-t)^2 + t^2 lam) dt, by quadrature
    t = torch.linspace(0, 1, 200001, dtype=F64)
    for lv in (9.0, 0.01):
        f = lv / ((1 - t) ** 2 + t ** 2 * lv)
        assert float(torch.trapezoid(f, t)) == pytest.approx(math.pi / 2 * math.sqrt(lv), rel=1e-6)


def test_lnc_separated_clusters_and_chance():
    g = torch.Generator().manual_seed(2)
    y = torch.arange(400) % 4
    z = 100 * torch.nn.functional.one_hot(y, 4).to(F64) + torch.randn(400, 4, generator=g, dtype=F64)
    r = latent_neighbour_consistency(z, y, k=10)
    assert r["lnc"] == 1.0 and r["chance"] == pytest.approx(0.25)
    # labels independent of the latents: LNC ~ chance
    yr = torch.randint(0, 4, (400,), generator=g)
    r2 = latent_neighbour_consistency(torch.randn(400, 3, generator=g, dtype=F64), yr, k=10)
    assert abs(r2["lnc"] - r2["chance"]) < 4 * r2["lnc_se"]


def test_precision_recall_and_frechet_basics():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(500, 3, generator=g, dtype=F64)
    far = feature_frechet(a + 100, a)
    assert far["fd"] == pytest.approx(3 * 100 ** 2, rel=1e-9)  # mean shift only
    pr = knn_precision_recall(a, a + 100)
    assert pr["precision"] == 0.0 and pr["recall"] == 0.0
    same = knn_precision_recall(a, a.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    # slerp: endpoints, norm interpolation, equal-norm great circle
    u, v = torch.tensor([[2.0, 0.0]], dtype=F64), torch.tensor([[0.0, 4.0]], dtype=F64)
    assert torch.allclose(slerp(u, v, 0.0), u) and torch.allclose(slerp(u, v, 1.0), v)
    m = slerp(u, v, 0.5)
    assert torch.allclose(m, torch.tensor([[3 / math.sqrt(2), 3 / math.sqrt(2)]], dtype=F64))


def test_generation_input_checks():
    x = torch.randn(64, 3)
    with pytest.raises(LatentgeoError, match="labels has 10 entries"):
        diagnose({"e": lambda v: v}, x, fisher=False, labels=torch.zeros(10))
    with pytest.raises(LatentgeoError, match="interp_alphas"):
        diagnose({"e": lambda v: v}, x, fisher=False, interp_alphas=(1.5,))
    with pytest.raises(LatentgeoError, match="latent_shape"):
        diagnose({"e": lambda v: v}, x, fisher=False, latent_shape={"e": (2, 2)})


def test_latent_shape_makes_flat_spatial_latents_spatial():
    # 2x2 average pooling, flattened: with latent_shape (1, 4, 4) the spatial measures apply, and pooling is exactly
    # scale-equivariant (pool(down x) = down(pool x)); the decoder still receives flat latents
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 1, 8, 8, generator=g)
    pool = torch.nn.functional.avg_pool2d
    enc = lambda v: pool(v, 2).flatten(1)  # noqa: E731
    dec = lambda z: torch.nn.functional.interpolate(z.reshape(-1, 1, 4, 4), scale_factor=2)  # noqa: E731
    s = diagnose({"p": enc}, x, decoders={"p": dec}, fisher=False, latent_shape=(1, 4, 4), n_penalty=16,
                 n_geometry=32, n_generation=16, n_equivariance=8, noise_scales=(0.1,), interp_alphas=(0.5,))
    e = s["encoders"]["p"]
    assert e["latent_shape"] == [1, 4, 4] and e["spectrum_kind"].startswith("2-D")
    assert e["equivariance"]["scale"]["error"] < 1e-6
    assert e["reconstruction"]["mse"] > 0 and e["interpolation"]["alpha_0.5"]["fd"] >= 0
    flat = diagnose({"p": enc}, x, decoders={"p": dec}, fisher=False, n_penalty=16, n_geometry=32,
                    n_generation=16, n_equivariance=8, noise_scales=(0.1,), interp_alphas=(0.5,))
    assert flat["encoders"]["p"]["spectrum_kind"].startswith("1-D")
