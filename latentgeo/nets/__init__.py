"""Denoiser / velocity networks: ``forward(x_in, c_noise) -> tensor shaped like x_in``.

- :class:`MLP` — residual MLP with sinusoidal noise embedding, optional periodic (sin, cos) input embedding.
- :class:`UNet` — small conv U-Net for 8/28/32 px images.
- :class:`DiffusersUNet` — adapter for a user's ``diffusers.UNet2DModel``.

All are registered with :func:`latentgeo.checkpoint.register_module`, so checkpoints rebuild them. Wrap them in
:class:`latentgeo.diffusion.EDMDenoiser` to get a denoiser ``D(x, sigma)``.
"""
from latentgeo.nets.diffusers_adapter import DiffusersUNet, MathAttnProcessor, use_math_attention
from latentgeo.nets.embedding import SinusoidalEmbedding, periodic_embed
from latentgeo.nets.mlp import MLP
from latentgeo.nets.unet import UNet

NETS = {"mlp": MLP, "unet": UNet, "diffusers_unet": DiffusersUNet}

__all__ = ["MLP", "UNet", "DiffusersUNet", "MathAttnProcessor", "use_math_attention", "SinusoidalEmbedding",
           "periodic_embed", "NETS"]
