"""The ``generalist``: one click-conditioned 3D network for any target (issue 28).

Input on the crop's network grid: the image, the previous probability, foreground and
background click maps and a box map; output: a probability. Trained open-set on every
target of the training splits, procedural volumes and simulated correction clicks.

Modules: :mod:`.net` (the network), :mod:`.prompts` (click and box channels, simulated
users; a box prompt's ROI and clicks: :func:`mecca.interaction.clicks.box_prompt`),
:mod:`.synth` (procedural volumes), :mod:`.data`
(preprocessing cache, training crops), :mod:`.train` (the resumable trainer, a CLI),
:mod:`.method` (:class:`GeneralistMethod`) and :mod:`.bundle` (export and load).
Registered in :mod:`mecca.methods` as ``generalist`` (``SPECS``, built lazily so that
``python -m mecca.methods.generalist.train`` still runs its module once); its shipped
bundle is ``src/mecca/models/generalist``. It is trained with
``python -m mecca.methods.generalist.train`` (several datasets at once, so not through
``mecca train --data``) and exported with ``mecca export-model RUN --out OUT``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SPECS", "GeneralistMethod", "box_prompt"]


def __getattr__(name: str) -> Any:
    """Import lazily, so ``python -m mecca.methods.generalist.<module>`` runs each module
    once (an eager import here would load the modules before runpy executes them)."""
    if name == "SPECS":
        from mecca.methods.generalist.bundle import export_generalist
        from mecca.methods.generalist.method import generalist_factory
        from mecca.methods.generalist.train import GeneralistConfig
        from mecca.methods.spec import MethodSpec

        return (
            MethodSpec(
                "generalist",
                generalist_factory,
                learned=True,
                config=GeneralistConfig,
                export=export_generalist,
                served=True,
            ),
        )
    if name == "GeneralistMethod":
        from mecca.methods.generalist.method import GeneralistMethod

        return GeneralistMethod
    if name == "box_prompt":
        from mecca.interaction.clicks import box_prompt

        return box_prompt
    raise AttributeError(name)
