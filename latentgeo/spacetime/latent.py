"""Spacetime geodesics through a LATENT diffusion model: encode, walk the latent spacetime, decode.

A latent diffusion model is a denoiser ``D(z, sigma)`` of an encoder's (normalised) latents ``z = E(x)``. Two images
``a``, ``b`` are encoded, the geodesic runs between ``(E(a), sigma)`` and ``(E(b), sigma)`` in the latent model's
spacetime (:func:`latentgeo.spacetime.geodesic`), and the curve is decoded image by image: ``decoder(z_t)`` (the
curve itself; its ends are ``decoder(E(a))`` and ``decoder(E(b))``) and ``decoder(D(z_t, sigma_t))`` (what the model
believes the clean latent is at each point).

Which identity holds (checked in tests/spacetime/test_latent_geodesic.py): for a linear encoder ``E(x) = Q^T x``
with orthonormal columns ``Q`` [D, d], decoder ``z -> Q z`` and a latent model with denoiser ``D_Z``, the
pushed-forward pixel model (data ``x0 = Q z0``) has the exact denoiser ``D_X(x, s) = Q D_Z(Q^T x, s)``, whose
posterior ``p(x0 | x, s)`` is the image under ``Q`` of ``p(z0 | Q^T x, s)``. KL divergences between posteriors are
invariant under that injective map, so every pixel-space curve ``x(t)`` has the spacetime length of its latent
projection ``Q^T x(t)``: the decoded latent geodesic has the same length in pixel space, and the pixel-space geodesic
between ``Q z_a`` and ``Q z_b`` is no shorter than the latent one (directions off the range of ``Q`` cost nothing
but gain nothing). Adam is not rotation-invariant, so the two optimisations follow the same path only when ``Q``
is a coordinate embedding; for a rotated ``Q`` the optimised lengths agree to the optimisation's accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

import torch

from latentgeo.errors import LatentgeoError, check_finite
from latentgeo.spacetime.geodesic import Geodesic

__all__ = ["LatentGeodesic", "latent_geodesic", "encode_latents", "decode_latents", "check_latent_model"]

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LatentGeodesic:
    """Result of :func:`latent_geodesic`.

    Attributes:
        geodesic: the latent :class:`~latentgeo.spacetime.Geodesic` (``xs`` [N, *latent shape], ``sigmas`` [N]).
        images: ``decoder(xs)`` [N, C, H, W] (or [N, ...] for vector data): the decoded curve.
        denoised: ``decoder(D(xs, sigmas))`` [N, ...], the decoded posterior means along the curve (or ``None``).
        za, zb: the endpoint latents [*latent shape] (after the PF-ODE encoding when ``pf_encode=True``).
    """

    geodesic: Geodesic
    images: torch.Tensor
    denoised: Optional[torch.Tensor]
    za: torch.Tensor
    zb: torch.Tensor

    @property
    def length(self) -> float:
        return float(self.geodesic.length)

    @property
    def energy(self) -> float:
        return float(self.geodesic.energy)


def _latent(z: Any) -> torch.Tensor:
    z = getattr(z, "latent_dist", z)  # diffusers-style outputs
    z = getattr(z, "mean", z) if not isinstance(z, torch.Tensor) else z
    z = z[0] if isinstance(z, (tuple, list)) else z
    if not isinstance(z, torch.Tensor):
        raise LatentgeoError(f"the encoder returned a {type(z).__name__}, not a tensor of latents; "
                             "make it return the latents as a torch tensor")
    return z


def encode_latents(encoder: Fn, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``encoder(x)`` for ``x`` [B, ...] in batches, without gradients -> latents [B, *latent shape] (on the
    encoder's output device and dtype)."""
    x = torch.as_tensor(x)
    check_finite(x, "x")
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], int(batch_size)):
            out.append(_latent(encoder(x[s:s + int(batch_size)])))
    z = torch.cat(out)
    if not bool(torch.isfinite(z).all()):
        raise LatentgeoError("the encoder returned NaN/inf latents; check the encoder and that the data lie in the "
                             "range it was trained on")
    return z


def decode_latents(decoder: Fn, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``decoder(z)`` for latents ``z`` [B, ...] in batches, without gradients -> [B, *data shape]."""
    out = []
    with torch.no_grad():
        for s in range(0, z.shape[0], int(batch_size)):
            y = decoder(z[s:s + int(batch_size)])
            out.append(getattr(y, "sample", y))
    return torch.cat(out)


def latent_geodesic(denoiser: Callable, encoder: Fn, decoder: Optional[Fn], a: torch.Tensor, b: torch.Tensor,
                    sigma: float = 0.1, sigma_b: Optional[float] = None, pf_encode: bool = False,
                    encode_steps: int = 32, encode_from: float = 0.002,
                    denoised: bool = True, **geodesic_kw: Any) -> LatentGeodesic:
    """Spacetime geodesic between two data points through a latent diffusion model, decoded.

    Args:
        denoiser: latent VE denoiser ``D(z, sigma) -> E[z0 | z]`` of the encoder's latents.
        encoder: ``x`` [B, ...] -> ``z`` [B, ...] (the latents the denoiser was trained on, e.g. a latentgeo
            autoencoder's normalised latents).
        decoder: ``z`` -> ``x`` (``None``: no images, ``images`` is then the latent curve itself).
        a, b: the two data points (one sample each, data shape [...], e.g. [C, H, W]).
        sigma: noise level of both endpoints in the latent spacetime (> 0); ``sigma_b``: another one for ``b``.
        pf_encode: first carry ``E(a)``, ``E(b)`` from ``encode_from`` to ``sigma`` along the latent PF-ODE
            (as DiffED does); without it ``E(a)``, ``E(b)`` are the endpoints themselves, so the decoded strip
            starts at ``decoder(E(a))`` and ends at ``decoder(E(b))``.
        denoised: also decode the posterior means ``D(z_t, sigma_t)`` along the curve.
        geodesic_kw: passed to :func:`latentgeo.spacetime.diffed._multires` / :func:`~latentgeo.spacetime.geodesic`
            (``n_points`` (an int or a coarse-to-fine list), ``steps``, ``n_nodes``, ``lr``, ``n_probes``,
            ``eval_probes``, ``generator``, ``chunk_size``, ``progress``, ...).
    Returns:
        :class:`LatentGeodesic` (length and energy are those of the latent curve, in the latent spacetime).
    """
    from latentgeo.errors import check_positive
    from latentgeo.spacetime.diffed import _multires, encode_to_sigma

    check_positive(float(sigma), "sigma")
    sigma_b = float(sigma) if sigma_b is None else float(sigma_b)
    check_positive(sigma_b, "sigma_b")
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise LatentgeoError(f"a and b have different shapes {tuple(a.shape)} and {tuple(b.shape)}; pass two samples "
                             "of the same data shape")
    z = encode_latents(encoder, torch.stack([a, b]))
    za, zb = z[0], z[1]
    if pf_encode:
        za = encode_to_sigma(denoiser, za[None], float(sigma), steps=encode_steps, sigma_start=encode_from)[0]
        zb = encode_to_sigma(denoiser, zb[None], sigma_b, steps=encode_steps, sigma_start=encode_from)[0]
    pts = geodesic_kw.pop("n_points", 32)
    sts = geodesic_kw.pop("steps", 200)
    g = _multires(denoiser, (za, float(sigma)), (zb, sigma_b), pts, sts, **geodesic_kw)
    xs, sg = g.xs.detach(), g.sigmas.detach()
    if decoder is None:
        return LatentGeodesic(g, xs, None, za, zb)
    imgs = decode_latents(decoder, xs)
    den_imgs = None
    if denoised:
        with torch.no_grad():
            den_imgs = decode_latents(decoder, denoiser(xs, sg.to(xs.dtype)))
    return LatentGeodesic(g, imgs, den_imgs, za, zb)


def check_latent_model(run_config: Dict[str, Any], encoder_path: Union[str, None], latent_shape,
                       run: str = "RUN", encoder_option: str = "--encoder") -> None:
    """Refuse (one-line :class:`LatentgeoError`) a diffusion model that was not trained on this encoder's latents.

    ``run_config``: the run's recorded user config (``latentgeo train diffusion --encoder AE`` records
    ``latent_of = {"path": AE, ...}`` and ``data_shape``); ``encoder_path``: the encoder given now (a path);
    ``latent_shape``: the latent shape the encoder gives (without the batch axis). An empty config (a model that
    records nothing, e.g. a TorchScript file) is checked by shape only.
    """
    from pathlib import Path

    shape = [int(v) for v in latent_shape]
    rec = (run_config or {}).get("latent_of")
    if run_config and rec is None:
        raise LatentgeoError(f"{run} was trained on data (not on latents of an encoder), so it cannot run in the "
                             f"latent space of {encoder_option} {encoder_path}; drop {encoder_option}, or train a "
                             f"model on its latents with `latentgeo train diffusion --encoder {encoder_path}`")
    if isinstance(rec, dict) and rec.get("path") and encoder_path is not None:
        if Path(str(rec["path"])).resolve() != Path(str(encoder_path)).expanduser().resolve():
            raise LatentgeoError(f"{run} was trained on the latents of {rec['path']}, not of {encoder_path}; pass "
                                 f"{encoder_option} {rec['path']}, or train a model on these latents")
    ds = (run_config or {}).get("data_shape")
    if ds and [int(v) for v in ds] != shape:
        raise LatentgeoError(f"{run} models latents of shape {list(ds)} but {encoder_option} gives {shape}; pass the "
                             "encoder it was trained on")
