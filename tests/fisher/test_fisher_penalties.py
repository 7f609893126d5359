"""Encoder penalties and spectra against analytic values."""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.penalties import (curvature_penalty, dimensional_compression, high_frequency_fraction,
                                        local_pca_dimension, power_spectrum, tangent_basis, tangential_distortion)

torch.set_num_threads(1)
F64 = torch.float64


def test_dimensional_compression_prediction():
    r = dimensional_compression(16, 4)
    assert r["predicted_dr_small_tau"] == pytest.approx(12 / 14)
    from latentgeo.fisher._closed_forms import compression_dr

    # both limits agree with the exact toy curve
    assert r["predicted_dr_small_tau"] == pytest.approx(float(compression_dr(16, 4, 1e-8)), rel=1e-6)
    assert r["predicted_dr_large_tau"] == pytest.approx(float(compression_dr(16, 4, 1e8)), rel=1e-6)
    assert dimensional_compression(784, 64, intrinsic_dim=10)["predicted_dr_small_tau"] == pytest.approx(720 / 774)
    with pytest.raises(LatentgeoError):
        dimensional_compression(4, 2, intrinsic_dim=4)


def test_local_pca_recovers_plane_and_dimension():
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=F64))[0]
    x = torch.randn(300, 2, generator=g, dtype=F64) @ U.T
    T = tangent_basis(x, 2, n_neighbors=12)
    assert T.shape == (300, 2, 6)
    # each local tangent plane equals span(U): projector distance ~ 0
    P = T.transpose(1, 2) @ T
    torch.testing.assert_close(P, (U @ U.T).expand_as(P), atol=1e-8, rtol=0)
    assert local_pca_dimension(x, 12) == 2


@pytest.mark.parametrize("delta", [0.1, 0.3, 0.6])
def test_tangential_distortion_of_linear_toy_is_delta(delta):
    A = torch.diag(torch.tensor([math.sqrt(1 + delta), math.sqrt(1 - delta)], dtype=F64))
    x = torch.randn(50, 2, dtype=F64)
    r = tangential_distortion(lambda y: y @ A.T, x, tangents=torch.eye(2, dtype=F64))
    # G = diag(1+delta, 1-delta): |G - I|_F / sqrt(2) = delta, and tr G / 2 = 1 so anisotropy = delta too
    assert r["distortion"] == pytest.approx(delta, rel=1e-10)
    assert r["anisotropy"] == pytest.approx(delta, rel=1e-10)
    assert r["metric_scale"] == pytest.approx(1.0)
    # a conformal map 3x has zero anisotropy but distortion 8 (G = 9 I)
    r = tangential_distortion(lambda y: 3 * y, x, tangents=torch.eye(2, dtype=F64))
    assert r["anisotropy"] == pytest.approx(0.0, abs=1e-12) and r["distortion"] == pytest.approx(8.0)


def test_tangential_distortion_with_local_pca_on_embedded_data():
    """Isometry of embedded data (rotation of R^5) has distortion 0; with PCA tangents (k estimated)."""
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=F64))[0]
    x = torch.randn(200, 2, generator=g, dtype=F64) @ U.T
    Q = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))[0]
    r = tangential_distortion(lambda y: y @ Q.T, x, n_neighbors=10)
    assert r["k"] == 2 and r["distortion"] < 1e-8
    r = tangential_distortion(lambda y: (y @ Q.T)[:, :3] * 2.0, x, k=2, n_neighbors=10)
    assert r["distortion"] > 0.5  # projection + scaling are caught


def test_curvature_of_ripple_matches_analytic():
    eps, om = 0.1, 5.0

    def E(x):
        return torch.cat([x, eps * torch.sin(om * x[:, :1])], 1)

    x = torch.randn(400, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    r = curvature_penalty(E, x, tangents=torch.eye(2, dtype=F64))
    x1 = x[:, 0]
    a = eps * om ** 2 * torch.sin(om * x1)  # |E''[e1, e1]|; E''[e2, e2] = 0
    b = eps * om * torch.cos(om * x1)
    # normal part of (0, 0, a) against span{(1, 0, b), (0, 1, 0)} is a / sqrt(1 + b^2)
    rms = ((a ** 2).mean() / 2).sqrt()
    rms_n = ((a ** 2 / (1 + b ** 2)).mean() / 2).sqrt()
    assert r["curvature_rms"] == pytest.approx(float(rms), rel=1e-9)
    assert r["normal_curvature_rms"] == pytest.approx(float(rms_n), rel=1e-9)
    # a linear encoder injects no curvature
    r = curvature_penalty(lambda y: y @ torch.randn(2, 4, dtype=F64), x, tangents=torch.eye(2, dtype=F64))
    assert r["curvature_rms"] < 1e-10


def test_power_spectrum_peak_and_flatness():
    H = W = 32
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    img = torch.cos(2 * math.pi * 4 * xx / W).to(F64)[None, None].repeat(3, 1, 1, 1)
    f, p = power_spectrum(img)
    assert f[p.argmax()] == pytest.approx(4 / 32)
    # white noise: flat spectrum at the pixel variance (|FFT|^2 / (HW) has mean = variance)
    noise = torch.randn(200, 1, H, W, generator=torch.Generator().manual_seed(0), dtype=F64)
    f, p = power_spectrum(noise)
    assert p[1:].mean() == pytest.approx(1.0, rel=0.05) and p[1:].std() / p[1:].mean() < 0.1
    assert high_frequency_fraction(f, p) > 0.5
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)
    f2, p2 = power_spectrum(smooth)
    assert high_frequency_fraction(f2, p2) < 0.5 * high_frequency_fraction(f, p)
    f1, p1 = power_spectrum(torch.randn(10, 16, dtype=F64))  # flat latents: 1-D spectrum
    assert f1.shape == p1.shape == (9,)


def test_finite_scale_curvature_sees_relu_kinks_and_matches_smooth_case():
    eps, om = 0.1, 5.0

    def E(x):
        return torch.cat([x, eps * torch.sin(om * x[:, :1])], 1)

    x = torch.randn(300, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = curvature_penalty(E, x, tangents=torch.eye(2, dtype=F64))
    fd = curvature_penalty(E, x, tangents=torch.eye(2, dtype=F64), step=1e-3)
    assert fd["curvature_rms"] == pytest.approx(exact["curvature_rms"], rel=1e-4)
    # |x1| folds the line: exact second derivative is 0 a.e., the finite-scale one is not
    relu = lambda y: torch.cat([y[:, :1].abs(), y[:, 1:]], 1)  # noqa: E731
    assert curvature_penalty(relu, x, tangents=torch.eye(2, dtype=F64))["curvature_rms"] == 0
    assert curvature_penalty(relu, x, tangents=torch.eye(2, dtype=F64), step=0.5)["curvature_rms"] > 0.1
