"""The user-facing interactive session, in three parts (docs/design.md): the click
history (:mod:`~mecca.session.store`), one method on one crop with exact undo/redo
(:mod:`~mecca.session.predictor`) and the session on a volume that joins them
(:mod:`~mecca.session.session`); several labels on one image
(:mod:`~mecca.session.labels`) and scripted sessions from a clicks file
(:mod:`~mecca.session.clicks_file`, ``mecca segment``)."""

from mecca.session.predictor import Predictor
from mecca.session.session import Session, SessionResult, nearest_voxel
from mecca.session.store import InteractionStore

__all__ = ["InteractionStore", "Predictor", "Session", "SessionResult", "nearest_voxel"]
