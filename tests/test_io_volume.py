import numpy as np

from mecca.io import Volume


def test_volume_geometry_from_affine():
    affine = np.diag([0.5, 1.0, 2.5, 1.0])
    affine[:3, 3] = [10.0, -4.0, 3.0]
    vol = Volume(np.zeros((4, 5, 6), np.float32), affine)
    assert vol.shape == (4, 5, 6)
    assert vol.spacing == (0.5, 1.0, 2.5)
    np.testing.assert_allclose(vol.direction, np.eye(3))
    world = vol.voxel_to_world(np.array([[2, 3, 4]]))
    np.testing.assert_allclose(world, [[11.0, -1.0, 13.0]])
    np.testing.assert_allclose(vol.world_to_voxel(world), [[2, 3, 4]])
