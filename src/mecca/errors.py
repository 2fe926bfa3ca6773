"""Errors a user can act on.

Every error the package raises on bad input is a :class:`MeccaError`: its message says
what was wrong, which file (when there is one) and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class MeccaError(Exception):
    """Base class of every error MECCA raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else Path(path)
        self.hint = hint
        text = message if path is None else f"{path}: {message}"
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class InputError(MeccaError):
    """An image, label or click file that cannot be used as given."""


class GeometryError(InputError):
    """Voxel grids or orientations that do not fit together."""


class DatasetError(MeccaError):
    """A dataset folder that does not follow the expected layout."""


class OverwriteError(MeccaError):
    """An output path exists and overwriting was not asked for."""


class ConfigError(MeccaError):
    """A setting with a value the code cannot use."""


class MethodError(MeccaError):
    """A method that failed on its input or gave an unusable result (NaN): the step is not
    kept, and the caller's session stays as it was."""


class ServerBusy(MeccaError):
    """The server cannot take this now: full (sessions or memory) or a step ran too long."""


class SaveError(MeccaError):
    """A change that could not be written to disk (full or read-only): it was not kept."""
