"""The version of badged (one place; ``badged.__version__`` and the User-Agent read it)."""

__version__ = "0.1.0"
