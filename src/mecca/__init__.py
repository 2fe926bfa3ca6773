"""MECCA: interactive 3D medical image segmentation.

The public API is small: :func:`load` reads an image into a :class:`~mecca.io.Volume`,
``mecca.Session`` turns clicks into refined masks, ``mecca.metrics`` scores masks, and
``mecca.methods.get(name)`` returns an interactive method. Heavy modules are imported lazily so that
``mecca --help`` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mecca._version import __version__
from mecca.errors import MeccaError

__all__ = ["MeccaError", "Session", "Volume", "__version__", "load"]

if TYPE_CHECKING:
    from mecca.io import Volume, load
    from mecca.session import Session


def __getattr__(name: str) -> Any:
    if name in ("load", "Volume"):
        from mecca import io

        return getattr(io, name)
    if name == "Session":
        from mecca.session import Session

        return Session
    raise AttributeError(f"module 'mecca' has no attribute {name!r}")
