"""Data sets for latentgeo, all returned as float32 torch tensors.

Point clouds are ``[N, D]``; images are ``[N, C, H, W]`` scaled to [-1, 1]. Every loader takes a ``seed``
and/or ``split`` and is deterministic. :func:`load` is the single entry point (a name from :data:`DATASETS`
or a path to a ``.npy``/``.npz`` file or a PNG folder); user-fixable problems raise
:class:`latentgeo.errors.LatentgeoError` with a one-line fix.
"""
from latentgeo.data.images import (
    APT_HINT,
    DEFAULT_FASHION_MNIST_DIR,
    digits,
    fashion_mnist,
    load_array,
    load_png_folder,
    idx_shape,
    read_idx,
    scale_uint8,
)
from latentgeo.data.registry import DATASETS, DEFAULT_N, content_hash, describe, is_image, load, split_seed
from latentgeo.data.synthetic import (
    anisotropic_gaussian,
    checkerboard,
    embedded_gaussian,
    embedding_frame,
    gaussian_mixture_subspace,
    rings,
    ripple,
    subspace_mixture_params,
    two_moons,
)

__all__ = [
    "load",
    "DATASETS",
    "DEFAULT_N",
    "is_image",
    "describe",
    "content_hash",
    "split_seed",
    # synthetic
    "gaussian_mixture_subspace",
    "subspace_mixture_params",
    "embedded_gaussian",
    "embedding_frame",
    "anisotropic_gaussian",
    "ripple",
    "two_moons",
    "rings",
    "checkerboard",
    # images and files
    "fashion_mnist",
    "digits",
    "load_array",
    "load_png_folder",
    "idx_shape",
    "read_idx",
    "scale_uint8",
    "DEFAULT_FASHION_MNIST_DIR",
    "APT_HINT",
]
