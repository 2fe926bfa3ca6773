"""Probabilistic partial segmentation (Wong, Guttag, Dalca 2022): a conditional VAE
proposes larger partial segmentations, the user accepts one and corrects it.

``model`` (settings, training pairs, loss, the proposer), ``train`` (the trainer),
``method`` (propose, accept, correct as an interactive method) and ``bundle`` (export).
"""

from mecca.methods.partial.bundle import export_partial
from mecca.methods.partial.method import partial_factory
from mecca.methods.partial.model import PartialConfig
from mecca.methods.partial.train import train_request
from mecca.methods.spec import MethodSpec

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "partial",
        partial_factory,
        learned=True,
        config=PartialConfig,
        train=train_request,
        export=export_partial,
    ),
)
"""The partial-segmentation method, as the registry offers it."""
