"""Geometry-preserving encoder/decoder (GPE), the VAE / AE / MDS baselines, and geometry metrics for any encoder.

GPE (REFERENCE.md section 1): the encoder ``T`` is trained ALONE on the Gromov-Monge embedding cost
(:func:`gme_loss`), then the decoder ``S`` on ``|S(T x) - x|^2`` with ``T`` frozen. The latent normalisation
``z = C (T(x) - m)`` is stored with the encoder (:class:`Encoder` buffers ``shift`` = m, ``scale`` = C).

Public API: :func:`gme_loss`, :func:`mds_stress`, :func:`kl_per_dim`, :class:`Encoder`, :class:`Decoder`,
:func:`train_autoencoder`, :func:`train_gpe_encoder`, :func:`train_decoder`, :func:`train_joint`, :func:`fit`,
:func:`load_encoder`, :func:`load_decoder`, :func:`geometry_report`, :func:`embed`, :func:`plot_geometry`.
"""
from latentgeo.autoencoders.geometry import DEFAULT_BETAS, as_encoder_fn, embed, geometry_report
from latentgeo.autoencoders.losses import gather_with_grad, gme_loss, kl_per_dim, mds_stress, pairwise_sq_dists
from latentgeo.autoencoders.nets import (DECODERS, ConvDecoderNet, ConvEncoderNet, Decoder, Encoder, MLPDecoderNet,
                                         MLPEncoderNet, WideConvDecoderNet)
from latentgeo.autoencoders.plots import plot_geometry
from latentgeo.autoencoders.training import (METHODS, encode_batched, evaluate_gme, evaluate_mse, finalise_normalisation,
                                             fit, load_decoder, load_encoder, save_autoencoder, train_autoencoder,
                                             train_decoder, train_gpe_encoder, train_joint)

__all__ = [
    "gme_loss", "mds_stress", "kl_per_dim", "pairwise_sq_dists", "gather_with_grad",
    "Encoder", "Decoder", "MLPEncoderNet", "ConvEncoderNet", "MLPDecoderNet", "ConvDecoderNet",
    "WideConvDecoderNet", "DECODERS",
    "METHODS", "fit", "train_gpe_encoder", "train_decoder", "train_joint", "train_autoencoder",
    "finalise_normalisation", "evaluate_mse", "evaluate_gme", "encode_batched",
    "save_autoencoder", "load_encoder", "load_decoder",
    "geometry_report", "embed", "as_encoder_fn", "DEFAULT_BETAS", "plot_geometry",
]
