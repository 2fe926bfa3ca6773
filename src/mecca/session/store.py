"""The click history of one session (:class:`InteractionStore`): pure JSON-serialisable
data, the first of the session's three parts (:mod:`mecca.session`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mecca.errors import InputError
from mecca.interaction.clicks import Click

STORE_FORMAT = "mecca.interactions"
STORE_VERSION = 1


class InteractionStore:
    """Click history of one session: steps run, clicks queued, and a redo stack.

    All clicks are on the original grid. Pure data: :meth:`to_dict` gives plain JSON
    types (for autosave), :meth:`from_dict` reads them back.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[Click, ...]] = []
        self._pending: list[Click] = []
        self._redo: list[tuple[Click, ...]] = []

    @property
    def steps(self) -> tuple[tuple[Click, ...], ...]:
        """Clicks of each step run so far, oldest first."""
        return tuple(self._steps)

    @property
    def pending(self) -> tuple[Click, ...]:
        """Clicks queued for the next step."""
        return tuple(self._pending)

    @property
    def redo_steps(self) -> tuple[tuple[Click, ...], ...]:
        """Undone steps, the next one to redo last."""
        return tuple(self._redo)

    @property
    def can_undo(self) -> bool:
        return bool(self._steps)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def queue(self, clicks: Iterable[Click]) -> None:
        """Queue clicks for the next step."""
        self._pending.extend(clicks)

    def clear_pending(self) -> None:
        """Drop the queued clicks."""
        self._pending.clear()

    def commit(self) -> tuple[Click, ...]:
        """Turn the queued clicks into a new step (may be empty); clears the redo stack."""
        step = tuple(self._pending)
        self._steps.append(step)
        self._pending.clear()
        self._redo.clear()
        return step

    def undo(self) -> tuple[Click, ...]:
        """Remove the last step onto the redo stack and return its clicks."""
        if not self._steps:
            raise InputError("nothing to undo: no step has been run")
        step = self._steps.pop()
        self._redo.append(step)
        return step

    def redo(self) -> tuple[Click, ...]:
        """Put the last undone step back and return its clicks."""
        if not self._redo:
            raise InputError("nothing to redo", hint="redo is possible right after undo")
        step = self._redo.pop()
        self._steps.append(step)
        return step

    def reset(self) -> None:
        """Forget everything: steps, queued clicks, redo stack."""
        self._steps.clear()
        self._pending.clear()
        self._redo.clear()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON record: format, version, steps, pending and redo click lists."""
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "steps": [[c.to_dict() for c in step] for step in self._steps],
            "pending": [c.to_dict() for c in self._pending],
            "redo": [[c.to_dict() for c in step] for step in self._redo],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InteractionStore:
        """Inverse of :meth:`to_dict`; InputError on a malformed record."""
        if not isinstance(data, Mapping) or data.get("format") != STORE_FORMAT:
            raise InputError(
                "not a MECCA interaction record", hint=f'expected "format": "{STORE_FORMAT}"'
            )
        if data.get("version") != STORE_VERSION:
            raise InputError(
                f"unsupported interaction record version {data.get('version')!r}",
                hint=f"this MECCA reads version {STORE_VERSION}",
            )
        store = cls()
        store._steps = [_clicks(step) for step in _list(data, "steps")]
        store._pending = list(_clicks(data.get("pending", [])))
        store._redo = [_clicks(step) for step in _list(data, "redo")]
        return store


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise InputError(f"interaction record field {key!r} must be a list, got {value!r}")
    return value


def _clicks(records: Any) -> tuple[Click, ...]:
    if not isinstance(records, list):
        raise InputError(f"a step of an interaction record must be a list, got {records!r}")
    return tuple(Click.from_dict(r) for r in records)
