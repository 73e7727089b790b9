"""The library's version: the one home read by ``pyproject.toml``, ``__version__`` and manifests."""

__version__ = "0.1.0"
