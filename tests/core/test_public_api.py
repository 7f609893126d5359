"""Every name in latentgeo.__all__ resolves to a real object (no dangling exports)."""
import latentgeo


def test_every_public_name_resolves():
    for name in latentgeo.__all__:
        assert getattr(latentgeo, name) is not None, name


def test_lazy_names_are_the_subpackage_objects():
    from latentgeo.diffusion import load_denoiser
    from latentgeo.spacetime import geodesic

    assert latentgeo.load_denoiser is load_denoiser and latentgeo.geodesic is geodesic
