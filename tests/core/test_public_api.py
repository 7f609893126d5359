"""Every name in latentgeo.__all__ resolves to a real object (no dangling exports)."""
import latentgeo


def test_every_public_name_resolves():
    for name in latentgeo.__all__:
        assert getattr(latentgeo, name) is not None, name


def test_lazy_names_are_the_subpackage_objects():
    from latentgeo.resolve import load_denoiser, load_encoder, load_flow
    from latentgeo.spacetime import geodesic

    # the public loaders are the resolver's (the CLI's) loaders, not the run-folder readers of the subpackages
    assert latentgeo.load_denoiser is load_denoiser and latentgeo.geodesic is geodesic
    assert latentgeo.load_encoder is load_encoder and latentgeo.load_flow is load_flow


def test_bring_your_own_model_names():
    from latentgeo import resolve
    from latentgeo.diffusion import EDMToVE, FlowToVE, VEDenoiser, VPToVE

    assert "resolve" in latentgeo.__all__ and latentgeo.resolve is resolve
    for name in ("resolve_denoiser", "resolve_encoder", "resolve_flow", "check_input_shape"):
        assert name in latentgeo.__all__ and getattr(latentgeo, name) is getattr(resolve, name)
    assert (latentgeo.EDMToVE, latentgeo.FlowToVE, latentgeo.VEDenoiser, latentgeo.VPToVE) == \
        (EDMToVE, FlowToVE, VEDenoiser, VPToVE)
