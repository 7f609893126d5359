"""Tiny random-init diffusers models, saved offline with ``save_pretrained`` (nothing is downloaded).

Shared by the tests that need a real diffusers folder: a ``UNet2DModel`` with attention in a ``DDPMPipeline`` folder
(``model_index.json``, ``unet/``, ``scheduler/``) and an SD-style ``AutoencoderKL`` (mid-block attention, SiLU).
Import it from a test file with ``sys.path.insert(0, str(Path(__file__).parents[1]))``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch


def diffusers_or_skip():
    """The diffusers module, or skip the calling test module when it is not installed."""
    import pytest

    return pytest.importorskip("diffusers")


def tiny_unet(in_channels: int = 1, sample_size: int = 8, seed: int = 0):
    """A ``UNet2DModel`` with one attention level: block_out_channels (8, 16), one layer per block."""
    import diffusers

    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                                 block_out_channels=(8, 16), layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=8).eval()


def tiny_vae(in_channels: int = 3, sample_size: int = 16, seed: int = 1, **kw: Any):
    """An SD-style ``AutoencoderKL`` (mid-block attention, SiLU, downsampling by 2, 4 latent channels)."""
    import diffusers

    torch.manual_seed(seed)
    cfg = dict(in_channels=in_channels, out_channels=in_channels, block_out_channels=(8, 16),
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
               latent_channels=4, norm_num_groups=4, layers_per_block=1, act_fn="silu", sample_size=sample_size,
               scaling_factor=0.5)
    cfg.update(kw)
    return diffusers.AutoencoderKL(**cfg).eval()


def save_pipeline(dest: Path, unet=None, scheduler: Optional[Dict[str, Any]] = None, vae=None) -> Path:
    """A ``DDPMPipeline`` folder (``model_index.json``, ``unet/``, ``scheduler/``), with ``vae/`` when given."""
    import diffusers

    dest = Path(dest)
    sched = diffusers.DDPMScheduler(**(scheduler or {}))
    diffusers.DDPMPipeline(unet=unet if unet is not None else tiny_unet(), scheduler=sched).save_pretrained(dest)
    if vae is not None:
        vae.save_pretrained(dest / "vae")
        idx = json.loads((dest / "model_index.json").read_text())
        idx["vae"] = ["diffusers", type(vae).__name__]
        (dest / "model_index.json").write_text(json.dumps(idx))
    return dest


def forge_model_index(src: Path, dest: Path, component: str, entry) -> Path:
    """A copy of pipeline folder ``src`` whose ``model_index.json`` names ``entry`` for ``component``."""
    import shutil

    shutil.copytree(src, dest)
    idx = json.loads((dest / "model_index.json").read_text())
    idx[component] = entry
    (dest / "model_index.json").write_text(json.dumps(idx))
    return dest
