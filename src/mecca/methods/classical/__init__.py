"""Classical click-based segmentation (no training): random walker, graph cut, GrowCut,
GeoS and seeded region growing, each seeded by the clicks so far
(:mod:`mecca.methods.classical.seeded`)."""

from mecca.methods.classical.geos import GeosMethod
from mecca.methods.classical.graphcut import GraphCutMethod
from mecca.methods.classical.growcut import GrowCutMethod
from mecca.methods.classical.random_walker import RandomWalkerMethod
from mecca.methods.classical.region_growing import RegionGrowingMethod
from mecca.methods.spec import MethodSpec

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("random_walker", RandomWalkerMethod, served=True),
    MethodSpec("graphcut", GraphCutMethod, served=True),
    MethodSpec("growcut", GrowCutMethod, served=True),
    MethodSpec("geos", GeosMethod, served=True),
    MethodSpec("region_growing", RegionGrowingMethod, served=True),
)
"""The classical methods, as the registry offers them."""
