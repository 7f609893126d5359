"""GPE vs VAE on the high-dimensional subspace mixture, the CLI, and GME under torch.distributed."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from latentgeo.autoencoders import geometry_report, gme_loss, train_autoencoder
from latentgeo.data import gaussian_mixture_subspace

torch.set_num_threads(1)


def test_gpe_preserves_mixture_geometry_better_than_vae():
    # GPE paper section 8.1: 8 Gaussians near a 2-D plane of R^64, latent dimension 2, same MLPs and budget.
    x = gaussian_mixture_subspace(1500, dim=64, seed=0)
    xv = gaussian_mixture_subspace(400, dim=64, seed=1)
    kw = dict(latent_dim=2, enc_width=64, dec_width=64, steps=200, batch_size=64, lr=2e-3, seed=0)
    enc_g, _, info_g = train_autoencoder("gpe", x, xv, decoder_steps=1, **kw)
    enc_v, _, info_v = train_autoencoder("vae", x, xv, **kw)
    rg = geometry_report(enc_g, xv, rescale="median", gw=False)
    rv = geometry_report(enc_v, xv, rescale="median", gw=False)
    assert rg["spearman"] >= 0.95
    assert rv["spearman"] < rg["spearman"] - 0.05
    assert rg["knn_overlap"] > rv["knn_overlap"]
    assert rg["trimmed_bilipschitz"] < rv["trimmed_bilipschitz"]
    assert info_g["val_gme"] < info_v["val_gme"]


def test_cli_train_geometry_resume_and_errors(tmp_path):
    from typer.testing import CliRunner

    from latentgeo.cli import app, main

    runner = CliRunner()
    out = tmp_path / "gpe"
    r = runner.invoke(app, ["train", "ae", "--method", "gpe", "--data", "gmm", "--out", str(out), "--steps", "30",
                            "--n", "400", "--n-val", "200", "--quiet"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "autoencoder.json").read_text())
    assert info["method"] == "gpe" and info["latent_dim"] == 2
    assert info["encoder_stage"]["steps"] == 30
    r = runner.invoke(app, ["geometry", str(out), "--n", "150"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "geometry" / "geometry.json").read_text())
    assert 0 < rep["spearman"] <= 1 and rep["n_points"] == 150
    for name in ("distance_scatter.png", "ratio_hist.png", "embedding_2d.png"):
        assert (out / "geometry" / name).stat().st_size > 1000
    # extending a finished run with --resume continues from the saved state
    r = runner.invoke(app, ["train", "ae", "--method", "gpe", "--data", "gmm", "--out", str(out), "--steps", "40",
                            "--n", "400", "--n-val", "200", "--quiet", "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "autoencoder.json").read_text())["encoder_stage"]["steps"] == 40




def _cli_error(args, capsys):
    from latentgeo.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def test_cli_bad_input(tmp_path, capsys):
    code, err = _cli_error(["train", "ae", "--method", "pca", "--data", "gmm", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "unknown method 'pca'" in err
    code, err = _cli_error(["train", "ae", "--data", "gmm", "--out", str(tmp_path / "b"), "--latent-dim", "11",
                            "--n", "50", "--steps", "1"], capsys)
    assert code == 2 and "larger than the data dimension" in err
    code, err = _cli_error(["geometry", str(tmp_path / "missing"), "--data", "gmm"], capsys)
    assert code == 2 and "does not exist" in err


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ddp_worker(rank, world, port, z_all, x_all, q):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = z_all.shape[0] // world
        z = z_all[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        loss = gme_loss(z, x_all[rank * b:(rank + 1) * b])
        loss.backward()
        # what DDP does to parameter gradients: average over ranks
        g = z.grad.clone()
        q.put((rank, float(loss.detach()), g.tolist()))  # plain lists: no shared-memory handles
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gme_under_distributed_spans_the_global_batch():
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(7)
    z_all = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x_all = torch.randn(8, 5, generator=g, dtype=torch.float64)
    zr = z_all.clone().requires_grad_(True)
    ref = gme_loss(zr, x_all)
    ref.backward()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, z_all, x_all, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = sorted([q.get(timeout=120) for _ in procs])
    for p in procs:
        p.join(timeout=60)
    for rank, loss, grad in res:
        assert loss == pytest.approx(float(ref.detach()), rel=1e-12)  # every rank sees all 8x8 pairs
        # the gathered gradient is summed over ranks (each computed the global loss); DDP then averages over
        # the 2 ranks, which gives exactly the global gradient for this rank's samples
        assert torch.allclose(torch.tensor(grad, dtype=torch.float64) / 2, zr.grad[rank * 4:(rank + 1) * 4], rtol=1e-10, atol=1e-14)


def test_shared_loop_threshold_stop_and_resume(tmp_path):
    # every engine runs latentgeo.train.train_loop, whose eval/stop hooks give the held-out early stop
    from latentgeo.autoencoders import train_gpe_encoder
    from latentgeo.autoencoders.nets import Encoder

    x = gaussian_mixture_subspace(300, dim=8, seed=0)
    xv = gaussian_mixture_subspace(100, dim=8, seed=1)
    torch.manual_seed(0)
    enc = Encoder([8], latent_dim=2, width=16)
    first = train_gpe_encoder(enc, x, xv, steps=100, eval_every=20, batch_size=32, engine="shared",
                              out=tmp_path, gme_threshold=1e-12)  # never met: a held-out curve at steps 0..100
    assert [r["step"] for r in first["history"]] == [0, 20, 40, 60, 80, 100]
    gmes = [r["val_gme"] for r in first["history"][1:]]
    assert first["steps"] == 100 and first["stopped"] == "steps" and gmes[-1] < first["history"][0]["val_gme"]
    k = min(range(3), key=lambda i: gmes[i])
    thr = gmes[k] + 1e-12
    assert first["history"][0]["val_gme"] > thr
    torch.manual_seed(0)
    enc2 = Encoder([8], latent_dim=2, width=16)
    res = train_gpe_encoder(enc2, x, xv, steps=200, eval_every=20, batch_size=32, engine="shared",
                            out=tmp_path / "b", gme_threshold=thr)
    # chunked training resumes exactly, so it retraces the first run and stops where that run crossed thr
    assert res["stopped"] == "threshold" and res["steps"] == 20 * (k + 1)
    assert res["history"][-1]["val_gme"] == pytest.approx(gmes[k], rel=1e-6)
    # resuming a stage that met its threshold restores its weights without training further
    torch.manual_seed(1)
    enc3 = Encoder([8], latent_dim=2, width=16)
    again = train_gpe_encoder(enc3, x, xv, steps=200, eval_every=20, batch_size=32, engine="shared",
                              out=tmp_path / "b", gme_threshold=thr, resume=True)
    assert again["steps"] == res["steps"]
    for p, q in zip(enc2.state_dict().values(), enc3.state_dict().values()):
        assert torch.equal(p, q)
