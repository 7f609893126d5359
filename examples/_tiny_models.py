"""Scaffolding for the examples: tiny random-init diffusers models saved to a local folder.

Nothing here is latentgeo: it only stands in for the model folder you already have (a ``save_pretrained`` /
``snapshot_download`` copy on disk). Every example calls one of these builders, then hands the FOLDER to
latentgeo's resolver exactly as it would hand a real model's folder. Nothing is downloaded; the weights are random,
so the numbers the examples print show that the pipeline runs, not anything about a trained model.

``LATENTGEO_EXAMPLE_QUICK=1`` (set by ``tests/core/test_examples.py``) makes every example even smaller.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

QUICK = os.environ.get("LATENTGEO_EXAMPLE_QUICK", "") not in ("", "0")
#: Where the example models go: ``examples/_models/`` (git-ignored) unless LATENTGEO_EXAMPLE_MODELS names a folder.
MODELS = Path(os.environ.get("LATENTGEO_EXAMPLE_MODELS") or Path(__file__).resolve().parent / "_models")


def models_dir() -> Path:
    """``examples/_models`` if writable, else a fresh temporary folder."""
    try:
        MODELS.mkdir(parents=True, exist_ok=True)
        probe = MODELS / ".write-test"
        probe.write_text("")
        probe.unlink()
        return MODELS
    except OSError:
        return Path(tempfile.mkdtemp(prefix="latentgeo-example-models-"))


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise SystemExit("this example needs diffusers: pip install 'latentgeo[interop]'") from None
    return diffusers


def tiny_unet(sample_size: int = 8, channels: int = 1, seed: int = 0):
    """A 2-level UNet2DModel with one attention block per level side (like SD / DDPM UNets, only tiny)."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                                 block_out_channels=(8, 16), layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=8).eval()


def ddpm_pipeline_folder(name: str = "tiny-ddpm", sample_size: int = 8, channels: int = 1,
                         prediction_type: str = "epsilon") -> Path:
    """A DDPMPipeline folder (``model_index.json``, ``unet/``, ``scheduler/``), like ``google/ddpm-cifar10-32``."""
    diffusers = _diffusers()
    folder = models_dir() / f"{name}-{sample_size}px-{channels}ch-{prediction_type}"
    if not (folder / "model_index.json").exists():
        sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                        prediction_type=prediction_type)
        diffusers.DDPMPipeline(unet=tiny_unet(sample_size, channels), scheduler=sched).save_pretrained(folder)
    return folder


def vae_folder(name: str = "tiny-vae", channels: int = 1, latent_channels: int = 4, sample_size: int = 16) -> Path:
    """An AutoencoderKL model folder (``config.json`` + safetensors), like a Stable Diffusion ``vae/`` folder."""
    diffusers = _diffusers()
    folder = models_dir() / f"{name}-{channels}ch-{latent_channels}lat"
    if not (folder / "config.json").exists():
        torch.manual_seed(1)
        vae = diffusers.AutoencoderKL(in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                                      down_block_types=("DownEncoderBlock2D",) * 2,
                                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=latent_channels,
                                      norm_num_groups=4, layers_per_block=1, sample_size=sample_size,
                                      scaling_factor=0.5)
        vae.eval().save_pretrained(folder)
    return folder


def describe(folder: Path) -> str:
    """One line naming what the folder holds (for the examples' first printout)."""
    idx = folder / "model_index.json"
    if idx.exists():
        comps = {k: v[1] for k, v in json.loads(idx.read_text()).items() if isinstance(v, list)}
        return f"{folder} (pipeline: {', '.join(f'{k}={v}' for k, v in comps.items())})"
    cfg = json.loads((folder / "config.json").read_text())
    return f"{folder} ({cfg.get('_class_name', '?')})"


def digits_images(n: int, size: int = 16, channels: int = 1) -> torch.Tensor:
    """``n`` scikit-learn digits (embedded in latentgeo, no network), 8x8 in [-1, 1], padded with the background value
    to ``size`` x ``size`` and repeated over ``channels`` (e.g. 3 for an RGB VAE)."""
    import latentgeo

    x = latentgeo.load_dataset("digits", split="train", n=n)          # [n, 1, 8, 8] in [-1, 1]
    pad = (size - x.shape[-1]) // 2
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, size - 8 - pad, pad, size - 8 - pad), value=-1.0)
    return x.repeat(1, channels, 1, 1)
