"""latentgeo.resolve: every kind of model spec loads (tiny random-init diffusers models saved offline, latentgeo runs,
TorchScript, user code), and files never get code run, classes imported or pickles loaded."""
import json
import math
import shutil
import sys

import pytest
import torch

import latentgeo
from latentgeo.diffusion import VPToVE, FlowToVE, ddpm_alphas_cumprod
from latentgeo.errors import LatentgeoError
from latentgeo.resolve import check_input_shape, resolve_denoiser, resolve_encoder, resolve_flow

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)


def _unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=8).eval()


def _vae(in_channels=3):
    torch.manual_seed(1)
    return diffusers.AutoencoderKL(in_channels=in_channels, out_channels=in_channels, block_out_channels=(8, 16),
                                   down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                                   layers_per_block=1, sample_size=16, scaling_factor=0.5, shift_factor=0.1).eval()


SD_SCHED = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    unet, vae = _unet(), _vae()
    sched = diffusers.DDPMScheduler(**SD_SCHED)
    pipe = root / "pipe"
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(pipe)
    vae.save_pretrained(pipe / "vae")  # a latent-diffusion layout: one folder with unet/, scheduler/, vae/
    idx = json.loads((pipe / "model_index.json").read_text())
    idx["vae"] = ["diffusers", "AutoencoderKL"]
    (pipe / "model_index.json").write_text(json.dumps(idx))
    bare = root / "bare" / "myunet"
    unet.save_pretrained(bare)
    return {"root": root, "pipe": pipe, "bare": bare, "unet": unet, "vae": vae, "sched": sched}


def test_pipeline_folder_denoiser_matches_the_formula(folders):
    den = resolve_denoiser(str(folders["pipe"]))
    assert isinstance(den, VPToVE) and den.prediction == "v" and den.info["sample_shape"] == [1, 8, 8]
    acp = folders["sched"].alphas_cumprod.double()
    assert math.isclose(den.sigma_min, float(((1 - acp[0]) / acp[0]).sqrt()), rel_tol=1e-5)
    assert math.isclose(den.sigma_max, float(((1 - acp[-1]) / acp[-1]).sqrt()), rel_tol=1e-5)
    k = torch.tensor([10, 500])
    s = ((1 - acp[k]) / acp[k]).sqrt().float()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = den(x, s)
        alpha = (1 + s ** 2).rsqrt().view(-1, 1, 1, 1)
        v = folders["unet"](alpha * x, k.float()).sample
        manual = alpha * (alpha * x) - (s.view(-1, 1, 1, 1) * alpha) * v
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.allclose(out, manual, atol=1e-4)
        assert den(x.double(), s.double()).dtype == torch.float64  # float64 data into the fp32 UNet
    with pytest.raises(LatentgeoError, match=r"14\.6"):
        den(x, 80.0)
    # the spec gives the same adapter back; latentgeo.save points at it
    assert den.spec == {"path": str(folders["pipe"].resolve())}
    again = resolve_denoiser(json.loads(json.dumps(den.spec)))
    with torch.no_grad():
        assert torch.equal(again(x, s), out)
    with pytest.raises(LatentgeoError, match="reference it by its spec"):
        latentgeo.save(den, folders["root"] / "x")
    # a folder with unet/ + scheduler/ and no model_index.json reads the same
    nomi = folders["root"] / "nomi"
    shutil.copytree(folders["pipe"], nomi)
    (nomi / "model_index.json").unlink()
    with torch.no_grad():
        assert torch.equal(resolve_denoiser(nomi)(x, s), out)
    with pytest.raises(LatentgeoError, match="prediction 'v'"):
        resolve_denoiser(folders["pipe"], parametrization="eps")


def test_bare_unet_folder_needs_its_schedule(folders):
    with pytest.raises(LatentgeoError, match="schedule"):
        resolve_denoiser(folders["bare"])
    with pytest.raises(LatentgeoError, match="parametrization"):
        resolve_denoiser(folders["bare"], schedule="ddpm")
    den = resolve_denoiser(folders["bare"], parametrization="epsilon", schedule="ddpm")
    assert math.isclose(den.sigma_min, 0.01, rel_tol=1e-3) and den.sigma_max > 100
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        y = den(x, torch.tensor([0.05, 1.0, 50.0]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert den.spec["schedule"] == "ddpm" and resolve_denoiser(den.spec).prediction == "epsilon"
    with pytest.raises(LatentgeoError, match="'sd'"):
        resolve_denoiser(folders["bare"], parametrization="eps", schedule="scaled_linear")


@pytest.mark.parametrize("cfg", [dict(beta_schedule="linear"), SD_SCHED, dict(beta_schedule="squaredcos_cap_v2"),
                                 dict(beta_schedule="sigmoid"),
                                 dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                      rescale_betas_zero_snr=True)])
def test_schedules_match_diffusers(cfg):
    ref = diffusers.DDPMScheduler(**cfg).alphas_cumprod.double()
    keys = {k: v for k, v in cfg.items() if k != "prediction_type"}
    ours = ddpm_alphas_cumprod(keys.get("beta_schedule"), keys.get("beta_start", 1e-4), keys.get("beta_end", 0.02),
                               1000, rescale_zero_terminal_snr=keys.get("rescale_betas_zero_snr", False))
    assert torch.equal(ours, ref)  # the same float32 arithmetic as diffusers


def test_vae_encoder_and_decoder(folders):
    vae = folders["vae"]
    for spec in (folders["pipe"] / "vae", folders["pipe"]):
        enc, dec, info = resolve_encoder(spec)
        assert info["scaling_factor"] == 0.5 and info["shift_factor"] == 0.1 and info["downsample"] == 2
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        with torch.no_grad():
            z = enc(x)
            assert z.shape == (2, 4, 8, 8) and torch.isfinite(z).all()
            assert torch.allclose(z, (vae.encode(x).latent_dist.mean - 0.1) * 0.5, atol=1e-5)
            xr = dec(z)
            assert torch.allclose(xr, vae.decode(z / 0.5 + 0.1).sample, atol=1e-5)
            assert enc(x.double()).dtype == torch.float64
    assert check_input_shape(enc, (3, 16, 16)) == (4, 8, 8)
    with pytest.raises(LatentgeoError, match="1 channel") as e:
        check_input_shape(enc, (1, 16, 16))
    assert "\n" not in str(e.value)
    with pytest.raises(LatentgeoError, match="multiples of 2"):
        check_input_shape(enc, (3, 15, 16))
    with pytest.raises(LatentgeoError, match="images"):
        check_input_shape(enc, (64,))
    with pytest.raises(LatentgeoError, match="channel"):
        enc(torch.zeros(1, 1, 16, 16))
    with pytest.raises(LatentgeoError, match="not a denoiser"):
        resolve_denoiser(folders["pipe"] / "vae")


def test_latentgeo_runs(tmp_path):
    from latentgeo.diffusion import EDMDenoiser, train_denoiser
    from latentgeo.flows import FlowModel, fit_flow

    x0 = torch.randn(64, 2)
    run = tmp_path / "diff"
    train_denoiser(x0, run, steps=2, batch_size=16, net_kwargs={"hidden": 8, "depth": 1}, progress=False,
                   device="cpu")
    den = resolve_denoiser(run)
    assert isinstance(den, EDMDenoiser) and den.sigma_min == 0 and den.sigma_max == math.inf
    assert den.info["sample_shape"] == [2] and den.spec == {"path": str(run.resolve())}
    assert torch.isfinite(den(torch.randn(4, 2), torch.full((4,), 0.5))).all()
    flow_run = tmp_path / "flow"
    fit_flow(x0, steps=2, batch_size=16, net_kwargs={"hidden": 8, "depth": 1}, out=flow_run,
             config={"kind": "flow", "coupling": "independent", "data_shape": [2]})
    fden = resolve_denoiser(flow_run)
    assert isinstance(fden, FlowToVE) and fden.convention == "latentgeo"
    assert torch.isfinite(fden(torch.randn(4, 2), torch.full((4,), 0.5))).all()
    assert isinstance(resolve_flow(flow_run), FlowModel)
    with pytest.raises(LatentgeoError, match="not a flow"):
        resolve_flow(run)
    with pytest.raises(LatentgeoError, match="not an autoencoder"):
        resolve_encoder(run)
    from latentgeo.autoencoders import Decoder, Encoder, save_autoencoder

    ae = tmp_path / "ae"
    save_autoencoder(ae, Encoder([6], latent_dim=2, arch="mlp", width=8),
                     Decoder([6], latent_dim=2, arch="mlp", width=8), {"method": "gpe"})
    enc, dec, info = resolve_encoder(ae)
    assert info["source"] == "latentgeo" and dec is not None and check_input_shape(enc, (6,)) == (2,)
    assert dec(enc(torch.randn(3, 6))).shape == (3, 6)
    with pytest.raises(LatentgeoError, match="trained on samples of shape"):
        check_input_shape(enc, (1, 8, 8))
    with pytest.raises(LatentgeoError, match="autoencoder run"):
        resolve_denoiser(ae)


class _Eps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x) * torch.cos(t / 1000)[:, None]


def test_torchscript_and_export_files(tmp_path):
    torch.manual_seed(0)
    f = tmp_path / "eps.pt"
    torch.jit.script(_Eps()).save(str(f))
    with pytest.raises(LatentgeoError, match="allow_torchscript=True"):  # TorchScript is code: only when asked
        resolve_denoiser(f, parametrization="eps", schedule="ddpm")
    with pytest.raises(LatentgeoError, match="parametrization"):
        resolve_denoiser(f, allow_torchscript=True)
    x, s = torch.randn(3, 2), torch.tensor([0.1, 1.0, 10.0])
    for p in ("eps", "ve", "velocity"):
        den = resolve_denoiser(f, parametrization=p, schedule="ddpm" if p == "eps" else None, allow_torchscript=True)
        y = den(x, s)
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert den.spec == {"path": str(f.resolve()), "parametrization": "velocity"}
    enc_f = tmp_path / "enc.pt"
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(enc_f))
    with pytest.raises(LatentgeoError, match="allow_torchscript=True"):
        resolve_encoder(enc_f)
    enc, dec, info = resolve_encoder(enc_f, allow_torchscript=True)
    assert dec is None and info["source"] == "torchscript" and check_input_shape(enc, (4,)) == (2,)
    with pytest.raises(LatentgeoError, match="cannot take samples"):
        check_input_shape(enc, (3,))
    ep = tmp_path / "eps.pt2"
    torch.export.save(torch.export.export(_Eps(), (x, s)), str(ep))
    with pytest.raises(LatentgeoError, match="allow_pickle"):
        resolve_denoiser(ep, parametrization="eps", schedule="ddpm")
    den = resolve_denoiser(ep, parametrization="eps", schedule="ddpm", allow_pickle=True)
    assert torch.isfinite(den(x, s)).all()


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_loaded(tmp_path, folders):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "model.pt"
    torch.save({"x": _Boom(str(marker))}, bad)
    with pytest.raises(LatentgeoError, match="allow_torchscript"):
        resolve_denoiser(bad, parametrization="ve")
    with pytest.raises(LatentgeoError, match="not a TorchScript"):  # even when allowed, a pickle is never loaded
        resolve_denoiser(bad, parametrization="ve", allow_torchscript=True)
    for suffix in (".bin", ".ckpt", ".pth"):
        shutil.copy(bad, tmp_path / f"m{suffix}")
        with pytest.raises(LatentgeoError, match="pickle"):
            resolve_denoiser(tmp_path / f"m{suffix}", parametrization="ve")
    assert not marker.exists()
    # a diffusers folder with only pickled weights: refused unless allow_pickle (then torch.load(weights_only=True))
    pk = tmp_path / "pk"
    folders["unet"].save_pretrained(pk, safe_serialization=False)
    assert not list(pk.glob("*.safetensors"))
    with pytest.raises(LatentgeoError, match="allow_pickle=True"):
        resolve_denoiser(pk, parametrization="eps", schedule="ddpm")
    den = resolve_denoiser(pk, parametrization="eps", schedule="ddpm", allow_pickle=True)
    with torch.no_grad():
        assert torch.isfinite(den(torch.randn(1, 1, 8, 8), 1.0)).all()


def test_forged_class_names_are_refused_without_importing(tmp_path, folders, monkeypatch):
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_mod_xyz.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Boom: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for entry in (["os", "system"], ["evil_mod_xyz", "Boom"], ["diffusers", "DiffusionPipeline"]):
        forged = tmp_path / f"forged_{entry[0]}"
        shutil.copytree(folders["pipe"], forged)
        idx = json.loads((forged / "model_index.json").read_text())
        idx["unet"] = entry
        (forged / "model_index.json").write_text(json.dumps(idx))
        with pytest.raises(LatentgeoError, match="never imports"):
            resolve_denoiser(forged)
    cfgf = tmp_path / "forged_os" / "unet" / "config.json"
    cfg = json.loads(cfgf.read_text())
    cfg["_class_name"] = "evil_mod_xyz.Boom"
    cfgf.write_text(json.dumps(cfg))
    with pytest.raises(LatentgeoError, match="never imports"):
        resolve_denoiser(cfgf.parent, parametrization="eps", schedule="ddpm")
    sch = tmp_path / "forged_os" / "scheduler" / "scheduler_config.json"
    sch.write_text(json.dumps({"_class_name": "evil_mod_xyz.Boom"}))
    with pytest.raises(LatentgeoError, match="does not read"):
        resolve_denoiser(folders["bare"], parametrization="eps", schedule=str(sch))
    assert "evil_mod_xyz" not in sys.modules and not marker.exists()


def test_code_only_when_named_explicitly(tmp_path, monkeypatch):
    (tmp_path / "user_models_xyz.py").write_text(
        "import torch\nclass Eps(torch.nn.Module):\n    def forward(self, x, t):\n        return 0 * x\n"
        "def make():\n    return Eps()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LatentgeoError, match="code='user_models_xyz:make'"):
        resolve_denoiser("user_models_xyz:make", parametrization="eps", schedule="ddpm")
    with pytest.raises(LatentgeoError, match="never runs code"):
        resolve_denoiser({"path": "x", "code": "user_models_xyz:make"})
    assert "user_models_xyz" not in sys.modules
    den = resolve_denoiser(code="user_models_xyz:make", parametrization="eps", schedule="ddpm")
    x = torch.randn(2, 3)
    assert torch.equal(den(x, 1.0), x) and den.spec is None
    with pytest.raises(LatentgeoError, match="save_pretrained"):
        latentgeo.save(den, tmp_path / "m")


def test_unknown_specs_list_what_is_accepted(tmp_path):
    for spec in (tmp_path / "missing", tmp_path):
        with pytest.raises(LatentgeoError, match="diffusers pipeline folder") as e:
            resolve_denoiser(spec)
        assert "\n" not in str(e.value)
    (tmp_path / "w.onnx").write_text("x")
    with pytest.raises(LatentgeoError, match="TorchScript"):
        resolve_denoiser(tmp_path / "w.onnx")
    with pytest.raises(LatentgeoError, match="unknown key"):
        resolve_denoiser({"path": str(tmp_path), "weights": "x"})
    with pytest.raises(LatentgeoError, match="parametrization"):
        resolve_denoiser(torch.nn.Linear(2, 2), parametrization="score")
    with pytest.raises(LatentgeoError, match="sigma_data"):
        resolve_denoiser(torch.nn.Linear(2, 2), parametrization="edm")
    den = resolve_denoiser(lambda x, c: torch.zeros_like(x), parametrization="edm", sigma_data=0.5)
    assert den.sigma_min == 0.002 and den.sigma_max == 80.0


def test_no_file_string_reaches_import_or_getattr(tmp_path, folders, monkeypatch):
    """Spy on importlib.import_module, __import__ and getattr while resolving forged diffusers folders (class names
    and config values): no string that only the files contain may reach them (diffusers' own loading included)."""
    import builtins
    import importlib

    tag = "zqforged"
    cases = []
    for i, edit in enumerate([lambda c: {**c, "_class_name": f"{tag}_mod.{tag}Class"},
                              lambda c: {**c, "down_block_types": [f"{tag}_mod.Block", "AttnDownBlock2D"]},
                              lambda c: {**c, "act_fn": f"os.{tag}"}]):
        d = tmp_path / f"c{i}"
        shutil.copytree(folders["bare"], d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(edit(cfg)))
        cases.append(d)
    pipe = tmp_path / "pipe"
    shutil.copytree(folders["pipe"], pipe)
    idx = json.loads((pipe / "model_index.json").read_text())
    (pipe / "model_index.json").write_text(json.dumps({**idx, "vae": [f"{tag}_lib", f"{tag}VAE"]}))
    seen = []
    real_im, real_imp, real_ga = importlib.import_module, builtins.__import__, builtins.getattr

    def spy_im(name, *a, **k):
        seen.append(name)
        return real_im(name, *a, **k)

    def spy_imp(name, *a, **k):
        seen.append(name)
        return real_imp(name, *a, **k)

    def spy_ga(obj, name, *default):
        seen.append(name)
        return real_ga(obj, name, *default)

    monkeypatch.setattr(importlib, "import_module", spy_im)
    monkeypatch.setattr(builtins, "__import__", spy_imp)
    monkeypatch.setattr(builtins, "getattr", spy_ga)
    refused = 0
    for run in [lambda d=d: resolve_denoiser(d, parametrization="eps", schedule="ddpm") for d in cases] + \
            [lambda: resolve_encoder(pipe)]:
        try:
            run()
        except LatentgeoError:
            refused += 1
    monkeypatch.undo()
    assert refused == len(cases) + 1
    leaked = [s for s in seen if isinstance(s, str) and tag in s]
    assert not leaked, leaked[:3]
    assert seen, "the spy saw nothing (test is not working)"


def test_config_edited_to_absurd_sizes_is_refused_before_allocating(tmp_path, folders):
    for pickled in (False, True):
        d = tmp_path / f"big{pickled}"
        folders["unet"].save_pretrained(d, safe_serialization=not pickled)
        cfg = json.loads((d / "config.json").read_text())
        cfg["block_out_channels"] = [40000, 40000]  # ~4e11 parameters if anything were allocated
        (d / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(LatentgeoError, match="disagree|describes a model"):
            resolve_denoiser(d, parametrization="eps", schedule="ddpm", allow_pickle=pickled)


def _other_vaes():
    return {
        "VQModel": lambda: diffusers.VQModel(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
            latent_channels=3, num_vq_embeddings=16, norm_num_groups=4, sample_size=16),
        "AutoencoderTiny": lambda: diffusers.AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1),
            num_decoder_blocks=(1, 1, 1), latent_channels=4),
        "AutoencoderDC": lambda: diffusers.AutoencoderDC(
            in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 16),
            decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)), decoder_norm_types="rms_norm",
            decoder_act_fns="silu", scaling_factor=0.4),
    }


@pytest.mark.parametrize("name", ["VQModel", "AutoencoderTiny", "AutoencoderDC"])
def test_other_diffusers_vaes(name, tmp_path):
    if not hasattr(diffusers, name):
        pytest.skip(f"diffusers has no {name}")
    torch.manual_seed(0)
    _other_vaes()[name]().save_pretrained(tmp_path / "v")
    enc, dec, info = resolve_encoder(tmp_path / "v")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = enc(x)
        assert tuple(z.shape[1:]) == check_input_shape(enc, (3, 16, 16)) and torch.isfinite(z).all()
        assert dec(z).shape == x.shape
    assert info["class"] == name


def test_public_loaders_take_every_spec_the_cli_takes(folders, tmp_path):
    """latentgeo.load_denoiser / load_flow / load_encoder / load_decoder are the resolver: a diffusers pipeline
    folder, a bare UNet folder with schedule=, a VAE folder and a TorchScript file (with the flag) load, and give
    the same numbers as the resolver and as the closed-form VP->VE conversion."""
    acp = folders["sched"].alphas_cumprod.double()
    k = torch.tensor([10, 500])
    s = ((1 - acp[k]) / acp[k]).sqrt().float()
    x = torch.randn(2, 1, 8, 8)
    den = latentgeo.load_denoiser(folders["pipe"])
    with torch.no_grad():
        alpha = (1 + s ** 2).rsqrt().view(-1, 1, 1, 1)
        v = folders["unet"](alpha * x, k.float()).sample
        manual = alpha * (alpha * x) - (s.view(-1, 1, 1, 1) * alpha) * v
        out = den(x, s)
        assert torch.allclose(out, manual, atol=1e-4)
        assert torch.equal(out, resolve_denoiser(folders["pipe"])(x, s))
        bare = latentgeo.load_denoiser(folders["bare"], schedule={k_: v_ for k_, v_ in SD_SCHED.items()
                                                                  if k_ != "prediction_type"},
                                       parametrization="v")
        assert torch.allclose(bare(x, s), out, atol=1e-6)
    with pytest.raises(LatentgeoError, match="schedule"):
        latentgeo.load_denoiser(folders["bare"], parametrization="v")
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    enc = latentgeo.load_encoder(folders["pipe"])
    dec = latentgeo.load_decoder(folders["pipe"])
    with torch.no_grad():
        z = enc(img)
        sf, sh = folders["vae"].config.scaling_factor, folders["vae"].config.shift_factor
        assert torch.allclose(z, (folders["vae"].encode(img).latent_dist.mean - sh) * sf, atol=1e-5)
        assert torch.allclose(dec(z), folders["vae"].decode(z / sf + sh).sample, atol=1e-5)
        r_enc, _, _ = resolve_encoder(folders["pipe"] / "vae")
        assert torch.equal(latentgeo.load_encoder(folders["pipe"] / "vae")(img), r_enc(img))
    f = tmp_path / "eps.pt"
    torch.jit.script(_Eps()).save(str(f))
    with pytest.raises(LatentgeoError, match="allow_torchscript"):
        latentgeo.load_denoiser(f, parametrization="eps", schedule="ddpm")
    ts = latentgeo.load_denoiser(f, parametrization="eps", schedule="ddpm", allow_torchscript=True)
    xs, ss = torch.randn(3, 2), torch.tensor([0.1, 1.0, 10.0])
    ref = resolve_denoiser(f, parametrization="eps", schedule="ddpm", allow_torchscript=True)
    assert torch.equal(ts(xs, ss), ref(xs, ss))
    fl = latentgeo.load_flow(f, parametrization="velocity", allow_torchscript=True)
    t = torch.tensor([0.2, 0.5, 0.9])
    assert torch.equal(fl(xs, t), resolve_flow(f, parametrization="velocity", allow_torchscript=True)(xs, t))
