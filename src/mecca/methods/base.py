"""The interface every interactive method implements: ``InteractiveMethod``, the state and
result types, and the optional capabilities (``ProposalMethod``, ``Segmenter``, ...).

This is the interface's public path; it is defined in :mod:`mecca.interface`, outside this
package, so that the modules the method families build on can import it without running
this package's ``__init__`` (which registers every family).
"""

from mecca.interface import (
    FG_BG,
    ConfidenceMethod,
    GridMethod,
    InteractiveMethod,
    MethodState,
    Proposal,
    ProposalMethod,
    Segmenter,
    StepResult,
    gives_confidence,
    grid_of,
    takes_only_edge_points,
)

__all__ = [
    "ConfidenceMethod",
    "FG_BG",
    "GridMethod",
    "InteractiveMethod",
    "MethodState",
    "Proposal",
    "ProposalMethod",
    "Segmenter",
    "StepResult",
    "gives_confidence",
    "grid_of",
    "takes_only_edge_points",
]
