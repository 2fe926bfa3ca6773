"""The supervised baselines of the MECCA paper's tables: P-Net, U-Net, UA-MT (segmenters,
no clicks) and InterCNN, DeepIGeoS (refiners of fg/bg clicks).

``method`` (the networks as interactive methods), ``config`` (the training settings),
``train`` (the trainer), ``uamt`` (the mean teacher's pieces) and ``bundle`` (export and
load).
"""

from mecca.methods.spec import MethodSpec
from mecca.methods.supervised.bundle import export_supervised, supervised_factory
from mecca.methods.supervised.config import METHODS, SupervisedConfig
from mecca.methods.supervised.train import train_request

SPECS: tuple[MethodSpec, ...] = tuple(
    MethodSpec(
        name,
        supervised_factory(name),
        learned=True,
        config=SupervisedConfig,
        train=train_request,
        export=export_supervised,
    )
    for name in METHODS
)
"""The supervised baselines, as the registry offers them."""
