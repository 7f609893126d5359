"""GPE losses, nets, geometry metrics, checkpoints and resume (small, seeded, CPU)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from latentgeo.autoencoders import (Decoder, Encoder, fit, geometry_report, gme_loss, kl_per_dim, load_decoder,
                                    load_encoder, mds_stress, save_autoencoder, train_autoencoder)
from latentgeo.errors import LatentgeoError

torch.set_num_threads(1)


def _double_loop_gme(z, x):
    z, x = z.reshape(z.shape[0], -1), x.reshape(x.shape[0], -1)
    b = z.shape[0]
    tot = 0.0
    for i in range(b):
        for j in range(b):
            dz = float(((z[i] - z[j]) ** 2).sum())
            dx = float(((x[i] - x[j]) ** 2).sum())
            tot += (math.log(1 + dz) - math.log(1 + dx)) ** 2
    return tot / b ** 2


@pytest.mark.parametrize("zshape,xshape", [((9, 3), (9, 7)), ((6, 2, 2), (6, 1, 4, 5))])
def test_gme_loss_equals_double_loop(zshape, xshape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(zshape, generator=g, dtype=torch.float64)
    x = torch.randn(xshape, generator=g, dtype=torch.float64) * 0.7
    assert float(gme_loss(z, x)) == pytest.approx(_double_loop_gme(z, x), rel=1e-10)


def test_gme_loss_gradient_finite_at_coincident_points():
    z = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0]], requires_grad=True)
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    gme_loss(z, x).backward()
    assert torch.isfinite(z.grad).all()
    # coincident data and latents -> the pair is exact; the gradient comes from pairs with the third point only
    assert z.grad.abs().sum() > 0


def test_mds_stress_and_kl_match_direct_formulas():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x = torch.randn(7, 10, generator=g, dtype=torch.float64)
    tot, cnt = 0.0, 0
    for i in range(7):
        for j in range(7):
            if i != j:
                tot += (float((mu[i] - mu[j]).norm()) / math.sqrt(3) - float((x[i] - x[j]).norm()) / math.sqrt(10)) ** 2
                cnt += 1
    assert float(mds_stress(mu, x)) == pytest.approx(tot / cnt, rel=1e-10)
    m2 = mu.clone().requires_grad_(True)
    with torch.no_grad():
        m2[1] = m2[0]
    mds_stress(m2, x).backward()
    assert torch.isfinite(m2.grad).all()
    logvar = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).mean()
    assert float(kl_per_dim(mu, logvar)) == pytest.approx(float(ref), rel=1e-10)


def test_orthogonal_map_is_an_isometry():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    enc = lambda a: a @ q  # noqa: E731
    assert float(gme_loss(enc(x), x)) < 1e-20
    rep = geometry_report(enc, x, gw_points=100)
    assert rep["trimmed_bilipschitz"] == pytest.approx(1.0, abs=1e-9)
    assert rep["spearman"] == pytest.approx(1.0, abs=1e-9)
    assert rep["knn_overlap"] == pytest.approx(1.0)
    assert rep["gme"] < 1e-20 and abs(rep["gw"]) < 1e-8
    assert all(p == 1.0 for _, p in rep["beta_curve"])
    # a non-isometry is detected: anisotropic scaling
    rep2 = geometry_report(lambda a: a * torch.tensor([3.0, 1, 1, 1, 1, 0.2], dtype=a.dtype), x, gw_points=100)
    assert rep2["trimmed_bilipschitz"] > 1.5 and rep2["gme"] > 1e-2


def test_geometry_report_rescale_and_diffusers_style_encoder():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, 5, generator=g, dtype=torch.float64)

    class _Dist:
        def __init__(self, m):
            self.mean = m

    class _Out:
        def __init__(self, m):
            self.latent_dist = _Dist(m)

    class FakeKL(torch.nn.Module):  # same interface as diffusers.AutoencoderKL.encode
        def encode(self, a):
            return _Out(4.0 * a)

    rep = geometry_report(FakeKL(), x, rescale="median", gw=False)
    assert rep["scale"] == pytest.approx(0.25)
    assert rep["trimmed_bilipschitz"] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(LatentgeoError):
        geometry_report(lambda a: a, x, eps=0.7)
    with pytest.raises(LatentgeoError):
        geometry_report(lambda a: a, x[:2])


@pytest.mark.slow
def test_real_diffusers_autoencoderkl_geometry():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",),
                                  up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,),
                                  layers_per_block=1, latent_channels=2, norm_num_groups=4)
    x = torch.rand(20, 1, 8, 8) * 2 - 1
    rep = geometry_report(vae, x, gw=False, k=3)
    assert math.isfinite(rep["spearman"]) and rep["n_pairs"] == 190


def test_encoder_normalisation_and_bad_input():
    torch.manual_seed(0)
    x = torch.randn(300, 12) * 3 + 1
    enc = Encoder([12], latent_dim=4)
    enc.fit_normalisation(x)
    with torch.no_grad():
        z = enc.eval()(x)
    assert z.mean(0).abs().max() < 1e-4
    assert float(z.pow(2).sum(1).mean()) == pytest.approx(4.0, rel=1e-4)
    with pytest.raises(LatentgeoError, match="larger than the data dimension"):
        Encoder([12], latent_dim=13)
    with pytest.raises(LatentgeoError, match="multiples of 4"):
        Encoder([1, 30, 30], arch="conv")
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(LatentgeoError, match="NaN"):
        train_autoencoder("gpe", bad, steps=2, latent_dim=2)
    with pytest.raises(LatentgeoError, match="unknown method"):
        train_autoencoder("pca", x, steps=2, latent_dim=2)
    with pytest.raises(LatentgeoError, match="samples of shape"):
        enc(torch.randn(5, 11))


@pytest.mark.parametrize("method", ["gpe", "vae"])
def test_checkpoint_round_trip_with_normalisation(tmp_path, method):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(120, 1, 8, 8, generator=g) * 2 - 1
    enc, dec, info = train_autoencoder(method, x, x[:40], latent_dim=3, steps=6, batch_size=20, out=tmp_path)
    assert float(enc.scale) != 1.0  # normalisation was fitted and must survive the round trip
    enc2, dec2 = load_encoder(tmp_path), load_decoder(tmp_path)
    assert isinstance(enc2, Encoder) and isinstance(dec2, Decoder)
    enc.eval(), dec.eval()
    with torch.no_grad():
        assert torch.equal(enc(x), enc2(x))
        assert torch.equal(enc.raw(x), enc2.raw(x))
        assert torch.equal(dec(enc(x)), dec2(enc2(x)))
    assert float(enc2.scale) == float(enc.scale) and torch.equal(enc2.shift, enc.shift)
    with pytest.raises(LatentgeoError, match="no encoder checkpoint"):
        load_encoder(tmp_path / "nowhere")


def test_joint_decoder_takes_normalised_latents():
    # For a baseline the decoder learnt on raw T(x); after normalisation dec(enc(x)) must equal decode_raw(T(x)).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(80, 6, generator=g)
    enc, dec, _ = train_autoencoder("ae", x, latent_dim=2, steps=5, batch_size=16)
    enc.eval(), dec.eval()
    with torch.no_grad():
        assert torch.allclose(dec(enc(x)), dec.decode_raw(enc.raw(x)), atol=1e-5)


class _Stop(Exception):
    pass


def test_fit_resume_is_exact(tmp_path):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 5, generator=g)

    def make():
        torch.manual_seed(0)
        return Encoder([5], latent_dim=2, width=16)

    def loss(enc):
        return lambda b, gen: gme_loss(enc.raw(b), b)

    ref = make()
    fit(ref, loss(ref), x, steps=30, batch_size=16, seed=3)

    a = make()
    calls = {"n": 0}

    def crashing(b, gen):
        calls["n"] += 1
        if calls["n"] == 25:
            raise _Stop()
        return gme_loss(a.raw(b), b)

    with pytest.raises(_Stop):
        fit(a, crashing, x, steps=30, batch_size=16, seed=3, out=tmp_path, ckpt_every=10)
    b_ = make()
    with torch.no_grad():  # perturb, so that only the restored state can produce the reference weights
        for p in b_.parameters():
            p.add_(1.0)
    res = fit(b_, loss(b_), x, steps=30, batch_size=16, seed=3, out=tmp_path, resume=True)
    assert res["steps"] == 30
    for p, q in zip(ref.state_dict().values(), b_.state_dict().values()):
        assert torch.equal(p, q)


def test_fit_budget_on_a_fake_clock_and_engine_alias(tmp_path, monkeypatch):
    """``fit`` runs latentgeo.train.train_loop: a CPU-time budget stops it ("time"), ``engine="fit"`` is an alias of
    ``"shared"`` (one folder layout, recorded as shared), and stage files of the removed loop are refused."""
    import latentgeo.train.loop as loop_mod

    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    enc = Encoder([5], latent_dim=2, width=16)
    clock = {"t": 0.0, "kinds": []}

    def timer(kind):
        clock["kinds"].append(kind)
        return lambda: clock["t"]

    def loss(b, g):
        clock["t"] += 0.5
        return gme_loss(enc.raw(b), b)

    monkeypatch.setattr(loop_mod, "_timer", timer)
    res = fit(enc, loss, x, steps=10 ** 9, batch_size=16, time_budget=2.0, clock="cpu", eval_every=2,
              eval_fn=lambda m: {"val_gme": float(gme_loss(m.raw(x), x))}, lr_schedule="cosine")
    assert clock["kinds"] == ["cpu"] and res["stopped"] == "time" and res["steps"] == 4
    assert res["seconds"] == pytest.approx(2.0)
    assert [(r["step"], r["seconds"]) for r in res["history"]] == [(0, 0.0), (2, 1.0), (4, 2.0)]
    assert all("val_gme" in r for r in res["history"])
    monkeypatch.undo()

    kw = dict(latent_dim=2, steps=4, batch_size=16, out=tmp_path / "ae")
    train_autoencoder("ae", x, engine="fit", **kw)
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["engine"] == "shared"
    assert (tmp_path / "ae" / "joint" / "state.safetensors").exists()
    _, _, info = train_autoencoder("ae", x, engine="shared", resume=True, **dict(kw, steps=6))
    assert info["joint_stage"]["steps"] == 6 and info["engine"] == "shared"
    with pytest.raises(LatentgeoError, match="training engine"):
        train_autoencoder("ae", x, engine="turbo", latent_dim=2, steps=1)

    legacy = tmp_path / "old"
    legacy.mkdir()
    (legacy / "state_encoder.safetensors").write_bytes(b"old")
    with pytest.raises(LatentgeoError, match="earlier latentgeo training loop"):
        fit(enc, loss, x, steps=3, out=legacy, name="encoder", resume=True)
