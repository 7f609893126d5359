from latentgeo._version import __version__
