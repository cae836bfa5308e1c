"""
tsecho: the timestamp echo server of I{Core Python Programming}, done in Twisted.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tsecho")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
