"""Geodesics through a latent diffusion model (latentgeo.spacetime.latent) on closed forms.

A linear encoder E(x) = Q^T x with orthonormal columns Q [D, d], decoder z -> Q z and an exact Gaussian-mixture
latent model D_Z: the pushed-forward pixel model x0 = Q z0 has the exact denoiser D_X(x, s) = Q D_Z(Q^T x, s) and
posteriors that are the images under Q of the latent ones, so (i) every curve Q z(t) has the same spacetime length
as z(t), exactly; (ii) for a coordinate embedding Q the pixel-space Adam run is the latent one embedded, so the
pixel geodesic has the latent geodesic's length to rounding; (iii) for a rotated Q the pixel geodesic is never
shorter than the latent one (directions off range(Q) cost nothing) and agrees to the optimisation's accuracy.
"""
import json

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import curve_length, geodesic
from latentgeo.spacetime.latent import check_latent_model, latent_geodesic

d, D = 3, 16
KW = dict(n_points=16, steps=100, n_nodes=4, n_probes=None, eval_probes=None, lr=0.1)


def _setup(kind):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(2, d, dtype=torch.float64, generator=g)
    covs = torch.stack([torch.eye(d, dtype=torch.float64) * 0.05] * 2)
    gm = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), means, covs)
    DZ = gm.as_denoiser()
    if kind == "coord":
        Q = torch.eye(D, dtype=torch.float64)[:, [2, 5, 11]]
    else:
        Q = torch.linalg.qr(torch.randn(D, d, dtype=torch.float64, generator=g))[0]

    def enc(x):
        return x.reshape(x.shape[0], -1) @ Q

    def dec(z):
        return (z @ Q.T).reshape(z.shape[0], 1, 4, 4)

    def DX(x, s):
        return (DZ(x.reshape(x.shape[0], -1) @ Q, s) @ Q.T).reshape(x.shape)

    # two images: the decoded class means plus a little off-subspace content (the encoder drops it)
    off = torch.randn(2, D, dtype=torch.float64, generator=g) * 0.1
    off = off - (off @ Q) @ Q.T
    imgs = dec(means) + off.reshape(2, 1, 4, 4)
    return DZ, DX, enc, dec, imgs[0], imgs[1]


@pytest.mark.parametrize("kind", ["coord", "rot"])
def test_endpoints_and_decoded_length_identity(kind):
    DZ, DX, enc, dec, a, b = _setup(kind)
    lg = latent_geodesic(DZ, enc, dec, a, b, sigma=0.1, **KW)
    assert lg.images.shape == (16, 1, 4, 4) and lg.denoised.shape == (16, 1, 4, 4)
    assert torch.allclose(lg.images[0], dec(enc(a[None]))[0], atol=1e-12)
    assert torch.allclose(lg.images[-1], dec(enc(b[None]))[0], atol=1e-12)
    assert not torch.allclose(lg.images[0], a, atol=1e-3)  # the off-subspace content is gone (a real check)
    # (i) the decoded curve has the latent curve's length in the pushed-forward pixel model
    Lpix = float(curve_length(DX, dec(lg.geodesic.xs), lg.geodesic.sigmas, n_probes=None))
    assert Lpix == pytest.approx(lg.length, rel=1e-10)
    # denoised strip = decoded posterior means
    Dz = DZ(lg.geodesic.xs, lg.geodesic.sigmas)
    assert torch.allclose(lg.denoised, dec(Dz), atol=1e-12)
    # the optimisation lowered the energy of the straight latent segment at sigma = 0.1
    assert lg.energy < 0.9 * lg.geodesic.history["energy"][0]


@pytest.mark.parametrize("kind", ["coord", "rot"])
def test_pixel_geodesic_matches_latent_one(kind):
    DZ, DX, enc, dec, a, b = _setup(kind)
    lg = latent_geodesic(DZ, enc, dec, a, b, sigma=0.1, **KW)
    pa, pb = dec(enc(a[None]))[0], dec(enc(b[None]))[0]
    gx = geodesic(DX, (pa, 0.1), (pb, 0.1), **KW)
    if kind == "coord":  # (ii) the same Adam run, embedded
        assert float(gx.length) == pytest.approx(lg.length, rel=1e-9)
    else:  # (iii) never shorter, and equal to the optimisation's accuracy
        assert float(gx.length) >= lg.length * (1 - 1e-9)
        assert float(gx.length) == pytest.approx(lg.length, rel=0.02)


def test_pf_encode_and_no_decoder():
    DZ, DX, enc, dec, a, b = _setup("coord")
    a = a + dec(torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64))[0]  # off the class mean (a PF-ODE fixed point)
    lg = latent_geodesic(DZ, enc, None, a, b, sigma=0.2, pf_encode=True, encode_steps=8,
                         n_points=8, steps=5, n_nodes=2, n_probes=None, eval_probes=None)
    assert lg.denoised is None and lg.images.shape == (8, d)  # the latent curve itself
    assert not torch.allclose(lg.za, enc(a[None])[0])  # moved along the PF-ODE to sigma = 0.2
    with pytest.raises(LatentgeoError, match="shapes"):
        latent_geodesic(DZ, enc, dec, a, b[0, :2], **KW)


def test_check_latent_model_refusals(tmp_path):
    ae = tmp_path / "ae"
    ae.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    cfg = {"latent_of": {"path": str(ae.resolve())}, "data_shape": [8]}
    check_latent_model(cfg, str(ae), [8])  # the right encoder: fine
    check_latent_model({}, str(ae), [8])  # a model that records nothing: nothing to check
    with pytest.raises(LatentgeoError, match="latents of"):
        check_latent_model(cfg, str(other), [8])
    with pytest.raises(LatentgeoError, match="shape"):
        check_latent_model(cfg, str(ae), [4])
    with pytest.raises(LatentgeoError, match="trained on data"):
        check_latent_model({"data": "digits", "data_shape": [1, 8, 8]}, str(ae), [8])


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def latent_runs(tmp_path_factory):
    """A tiny latentgeo autoencoder on digits (8-D latents, with decoder), a latent diffusion run on its latents,
    and a pixel-space run (tiny models, few steps: the test is about the wiring, not quality)."""
    from latentgeo.cli import main

    root = tmp_path_factory.mktemp("latent")
    ae, lat, pix = root / "ae", root / "lat", root / "pix"
    main(["train", "ae", "--method", "ae", "--data", "digits", "--out", str(ae), "--steps", "10", "--latent-dim", "8",
          "--arch", "mlp", "--decoder", "mlp", "--quiet", "--device", "cpu"])
    main(["train", "diffusion", "--encoder", str(ae), "--out", str(lat), "--steps", "10", "--net", "mlp", "--quiet",
          "--device", "cpu"])
    main(["train", "diffusion", "--data", "digits", "--out", str(pix), "--steps", "5", "--net", "mlp", "--quiet",
          "--device", "cpu"])
    return {"ae": ae, "lat": lat, "pix": pix, "root": root}


def _exit(argv):
    from latentgeo.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_cli_geodesic_encoder_decodes_the_endpoints(latent_runs, tmp_path):
    import numpy as np

    from latentgeo.cli import main
    from latentgeo.data import load
    from latentgeo.resolve import resolve_encoder

    out = tmp_path / "g"
    main(["geodesic", str(latent_runs["lat"]), "--encoder", str(latent_runs["ae"]), "--data", "digits", "--from", "0",
          "--to", "7", "--n-points", "8", "--steps", "5", "--quiet", "--out", str(out), "--device", "cpu"])
    rec = json.loads((out / "geodesic.json").read_text())
    assert rec["space"] == "latent" and rec["latent_shape"] == [8] and rec["length"] > 0
    with np.load(out / "geodesic.npz") as z:
        imgs, lat = z["images"], z["latents"]
    assert imgs.shape == (8, 1, 8, 8) and lat.shape == (8, 8)
    enc, dec, _ = resolve_encoder(str(latent_runs["ae"]))
    x = load("digits", split="test")
    with torch.no_grad():
        ref = dec(enc(x[[0, 7]]))
    assert np.allclose(imgs[0], ref[0].numpy(), atol=1e-5) and np.allclose(imgs[-1], ref[1].numpy(), atol=1e-5)
    assert (out / "geodesic.png").stat().st_size > 1000 and (out / "geodesic_denoised.png").exists()


def test_cli_diffed_encoder_matrix(latent_runs, tmp_path):
    import numpy as np

    from latentgeo.cli import main

    out = tmp_path / "d"
    main(["diffed", str(latent_runs["lat"]), "--encoder", str(latent_runs["ae"]), "--data", "digits", "--matrix",
          "20", "--n-points", "6", "--steps", "3", "--boot", "30", "--quiet", "--out", str(out), "--device", "cpu"])
    rec = json.loads((out / "diffed_matrix.json").read_text())
    assert rec["diffed_space"] == "latent" and "semantics" in rec
    with np.load(out / "diffed_matrix.npz") as z:
        D, E, idx = z["matrix"], z["euclid"], z["indices"]
    from latentgeo.data import load

    x = load("digits", split="test")[idx].reshape(20, -1).double()
    assert np.allclose(E, torch.cdist(x, x).numpy(), atol=1e-6)  # Euclid stays in pixel space
    assert D.shape == (20, 20) and np.all(D[~np.eye(20, dtype=bool)] > 0)


def test_cli_encoder_refusals(latent_runs, tmp_path, capsys):
    import shutil

    other = latent_runs["root"] / "ae_copy"
    if not other.exists():
        shutil.copytree(latent_runs["ae"], other)
    base = ["--data", "digits", "--matrix", "5", "--quiet", "--device", "cpu", "--out", str(tmp_path / "x")]
    assert _exit(["diffed", str(latent_runs["pix"]), "--encoder", str(latent_runs["ae"])] + base) == 2
    assert "trained on data" in capsys.readouterr().err
    assert _exit(["diffed", str(latent_runs["lat"]), "--encoder", str(other)] + base) == 2
    assert "latents of" in capsys.readouterr().err
    assert _exit(["geodesic", str(latent_runs["lat"]), "--encoder", str(latent_runs["ae"]), "--from", "0", "--to",
                  "1", "--quiet", "--out", str(tmp_path / "y")]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
