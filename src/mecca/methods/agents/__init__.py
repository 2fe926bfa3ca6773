"""The voxel agents: MECCA and IteR-MRL (and IteR-MRL's variants), every voxel an agent
moving its foreground probability, trained with A2C.

``method`` (the trained policy as an interactive method), ``config`` (the training
settings), ``train`` (the trainer), ``bundle`` (export and load) and ``variants`` (IteR-MRL
models trained with other settings, each a method of its own).
"""

from mecca.methods.agents.bundle import agent_factory, export_bundle
from mecca.methods.agents.config import TrainConfig
from mecca.methods.agents.train import train_request
from mecca.methods.agents.variants import ITERMRL_VARIANTS, variant_factory
from mecca.methods.spec import MethodSpec

SPECS: tuple[MethodSpec, ...] = (
    *(
        MethodSpec(
            name,
            agent_factory(name),
            learned=True,
            config=TrainConfig,
            train=train_request,
            export=export_bundle,
            served=True,
        )
        for name in ("mecca", "itermrl")
    ),
    *(MethodSpec(name, variant_factory(name), learned=True) for name in ITERMRL_VARIANTS),
)
"""The agents' methods, as the registry offers them."""
