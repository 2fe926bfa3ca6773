"""Reading and writing volumes: formats, geometry, masks, errors, atomic writes."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mecca import io
from mecca.errors import GeometryError, InputError, OverwriteError
from mecca.io import Volume, load, load_dicom_series, load_label, save_mask, save_volume

SPACING = (0.5, 1.25, 3.0)  # anisotropic, exactly representable in float32
ORIGIN = (-10.0, 20.5, 3.0)
UID_ROOT = "1.2.826.0.1.3680043.2.1125"


def make_affine(spacing=SPACING, origin=ORIGIN, rotation=None) -> np.ndarray:
    """Affine with the given spacing (mm), origin (RAS mm) and optional (3, 3) rotation."""
    affine = np.eye(4)
    rot = np.eye(3) if rotation is None else np.asarray(rotation)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def rotation(axis: int, degrees: float) -> np.ndarray:
    """(3, 3) rotation about one world axis."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    a, b = [n for n in range(3) if n != axis]
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    return rot


OBLIQUE = rotation(2, 30.0) @ rotation(0, 20.0)


def ramp(shape=(6, 7, 8)) -> np.ndarray:
    """Float image whose value encodes its (i, j, k) index, so axis mix-ups show."""
    i, j, k = np.indices(shape, dtype=np.float32)
    return i + 10 * j + 100 * k


def label_of(arr: np.ndarray) -> np.ndarray:
    """Small multi-label mask derived from an image."""
    return (arr.astype(np.int64) % 3).astype(np.uint8)


def raw_nifti_header(path: Path) -> nib.Nifti1Header:
    """The header as stored on disk (nibabel's loaded header hides the scaling)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return nib.Nifti1Header.from_fileobj(f)


def sitk_image(vol: Volume) -> sitk.Image:
    """SimpleITK image of a Volume, written independently of mecca.io."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(vol.array.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0])
    m = lps @ vol.affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    image.SetSpacing(tuple(spacing))
    image.SetDirection(tuple((m / spacing).ravel()))
    image.SetOrigin(tuple(lps @ vol.affine[:3, 3]))
    return image


def sitk_world(path: Path, ijk: np.ndarray) -> np.ndarray:
    """RAS world points of voxel indices as SimpleITK places them in a file."""
    image = sitk.ReadImage(str(path))
    pts = [image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in ijk]
    return np.asarray(pts) * np.array([-1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- round trips

WRITABLE = [".nii", ".nii.gz", ".nrrd", ".mha", ".gipl", ".gipl.gz"]


@pytest.mark.parametrize("ext", WRITABLE)
def test_round_trip_every_writable_format(tmp_path, ext):
    # GIPL has no direction field: it can only hold ITK's identity (LPS) orientation
    lps = np.diag([-1.0, -1.0, 1.0]) if ext.startswith(".gipl") else None
    vol = Volume(ramp(), make_affine(rotation=lps))
    img_path = save_volume(vol, tmp_path / f"img{ext}")
    loaded = load(img_path)
    assert loaded.shape == vol.shape
    assert loaded.spacing == SPACING
    np.testing.assert_array_equal(loaded.affine, vol.affine)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.array.dtype == np.float32
    assert loaded.meta["format"] == io.FORMATS[ext]

    mask = label_of(loaded.array)
    mask_path = save_mask(mask, loaded, tmp_path / f"mask{ext}")
    back = load_label(mask_path, like=loaded)
    np.testing.assert_array_equal(back.array, mask)
    np.testing.assert_array_equal(back.affine, loaded.affine)
    assert back.spacing == SPACING


@pytest.mark.parametrize("ext", [".mhd", ".nhdr"])
def test_two_file_formats_are_read(tmp_path, ext):
    vol = Volume(ramp(), make_affine())
    path = tmp_path / f"img{ext}"
    sitk.WriteImage(sitk_image(vol), str(path))
    loaded = load(path)
    np.testing.assert_array_equal(loaded.array, vol.array)
    np.testing.assert_array_equal(loaded.affine, vol.affine)
    out = save_mask(label_of(loaded.array), loaded, tmp_path / "mask.mha")
    np.testing.assert_array_equal(load_label(out, like=loaded).affine, vol.affine)


def test_two_file_formats_are_not_written(tmp_path):
    vol = Volume(ramp(), make_affine())
    with pytest.raises(InputError, match=r"\.mha"):
        save_mask(np.zeros(vol.shape, np.uint8), vol, tmp_path / "mask.mhd")


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_grid_round_trip(tmp_path, ext):
    vol = Volume(ramp(), make_affine((0.7, 1.3, 2.9), (5.5, -3.25, 40.0), OBLIQUE))
    loaded = load(save_volume(vol, tmp_path / f"img{ext}"))
    np.testing.assert_allclose(loaded.affine, vol.affine, atol=1e-5)
    np.testing.assert_allclose(loaded.spacing, (0.7, 1.3, 2.9), atol=1e-6)
    np.testing.assert_allclose(loaded.direction, OBLIQUE, atol=1e-6)
    back = load_label(save_mask(label_of(ramp()), loaded, tmp_path / f"m{ext}"), like=loaded)
    np.testing.assert_array_equal(back.affine, loaded.affine)


def test_gipl_refuses_an_orientation_it_cannot_store(tmp_path):
    vol = Volume(ramp(), make_affine(rotation=OBLIQUE))
    with pytest.raises(GeometryError, match="cannot store"):
        save_mask(np.zeros(vol.shape, np.uint8), vol, tmp_path / "m.gipl")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- NIfTI headers


def nifti_with_codes(path: Path, sform_code=2, qform_code=1) -> Path:
    """int16 NIfTI with scaling and distinct qform (rotated) and sform codes."""
    img = nib.Nifti1Image(ramp().astype(np.int16), make_affine(rotation=rotation(1, 10.0)))
    img.set_sform(img.affine, code=sform_code)
    img.set_qform(img.affine, code=qform_code)
    img.header.set_slope_inter(2.0, 5.0)
    nib.save(img, str(path))
    return path


def test_nifti_mask_copies_qform_sform_and_codes(tmp_path):
    src = nifti_with_codes(tmp_path / "img.nii.gz")
    like = load(src)
    np.testing.assert_allclose(like.array, ramp() * 2 + 5)  # scaling applied on reading
    out = save_mask(label_of(ramp()), like, tmp_path / "mask.nii.gz")
    a, b = raw_nifti_header(src), raw_nifti_header(out)
    assert (int(b["sform_code"]), int(b["qform_code"])) == (2, 1)
    for key in ("srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d"):
        np.testing.assert_array_equal(a[key], b[key])
    for key in ("qoffset_x", "qoffset_y", "qoffset_z", "pixdim"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (float(b["scl_slope"]), float(b["scl_inter"])) == (1.0, 0.0)
    assert b.get_data_dtype() == np.uint8


def test_nifti_mask_from_other_format_gets_scanner_codes(tmp_path):
    like = load(save_volume(Volume(ramp(), make_affine(rotation=OBLIQUE)), tmp_path / "i.nrrd"))
    hdr = raw_nifti_header(save_mask(label_of(ramp()), like, tmp_path / "m.nii"))
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 1)
    np.testing.assert_allclose(hdr.get_sform(), like.affine, atol=1e-5)
    np.testing.assert_allclose(hdr.get_qform(), like.affine, atol=1e-5)


def test_mask_dtype_uint8_or_uint16(tmp_path):
    like = Volume(ramp(), make_affine())
    small = np.zeros(like.shape, bool)
    small[1, 2, 3] = True
    big = np.zeros(like.shape, np.int64)
    big[1, 2, 3] = 300
    assert raw_nifti_header(save_mask(small, like, tmp_path / "a.nii")).get_data_dtype() == np.uint8
    path = save_mask(big, like, tmp_path / "b.nii.gz")
    assert raw_nifti_header(path).get_data_dtype() == np.uint16
    assert load_label(path, like=like).array[1, 2, 3] == 300
    assert load_label(save_mask(big, like, tmp_path / "b.nrrd"), like=like).array.max() == 300


def test_mask_values_checked(tmp_path):
    like = Volume(ramp(), make_affine())
    with pytest.raises(InputError, match="0..65535"):
        save_mask(-np.ones(like.shape, np.int16), like, tmp_path / "a.nii")
    with pytest.raises(InputError, match="whole numbers"):
        save_mask(np.full(like.shape, 0.5), like, tmp_path / "a.nii")
    with pytest.raises(GeometryError, match="shape"):
        save_mask(np.zeros((6, 7, 9), np.uint8), like, tmp_path / "a.nii")


# ----------------------------------------------------------------------------- same anatomy


def flipped(vol: Volume, axis: int) -> Volume:
    """Same world content with one array axis reversed."""
    flip = np.eye(4)
    flip[axis, axis] = -1.0
    flip[axis, 3] = vol.shape[axis] - 1
    return Volume(np.flip(vol.array, axis).copy(), vol.affine @ flip)


def permuted(vol: Volume, order: tuple[int, int, int]) -> Volume:
    """Same world content with the array axes permuted."""
    affine = vol.affine.copy()
    affine[:, :3] = vol.affine[:, list(order)]
    return Volume(vol.array.transpose(order).copy(), affine)


def blob_on_grid(shape, affine, centre_world, radius_mm) -> Volume:
    """Image with a bright ball around a world point, sampled on any grid."""
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - centre_world, axis=1) <= radius_mm
    return Volume((100.0 * inside).reshape(shape).astype(np.float32), affine)


def anatomy_variants() -> tuple[np.ndarray, dict[str, Volume]]:
    """A blob's world centre and the same content stored in several orientations."""
    affine = make_affine((1.0, 1.5, 2.0), (-9.0, -17.0, -15.0))
    centre = affine[:3, :3] @ np.array([5.0, 7.0, 4.0]) + affine[:3, 3]
    ras = blob_on_grid((20, 24, 16), affine, centre, 3.1)
    lps = flipped(flipped(ras, 0), 1)
    las = flipped(ras, 0)
    oblique = make_affine((1.1, 1.2, 1.9), (-15.0, -20.0, -20.0), OBLIQUE)
    return centre, {
        "ras": ras,
        "lps": lps,
        "las": las,
        "permuted": permuted(las, (2, 0, 1)),
        "oblique": blob_on_grid((26, 26, 20), oblique, centre, 3.1),
    }


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_a_click_lands_on_the_same_anatomy(tmp_path, ext):
    centre, variants = anatomy_variants()
    assert np.count_nonzero(variants["lps"].array) > 0
    codes = set()
    for name, vol in variants.items():
        loaded = load(save_volume(vol, tmp_path / f"{name}{ext}"))
        ijk = tuple(int(v) for v in np.rint(loaded.world_to_voxel(centre)))
        assert loaded.array[ijk] == 100.0, name
        np.testing.assert_allclose(loaded.voxel_to_world(np.array(ijk)), centre, atol=1.0)
        codes.add("".join(nib.aff2axcodes(loaded.affine)))
    assert {"RAS", "LPS", "LAS"} <= codes


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_nibabel_and_simpleitk_agree_on_world_coordinates(tmp_path, ext):
    _, variants = anatomy_variants()
    ijk = np.array([[0, 0, 0], [3, 5, 7], [10.5, 2.0, 1.0]])
    for name, vol in variants.items():
        path = save_volume(vol, tmp_path / f"{name}{ext}")
        loaded = load(path)
        np.testing.assert_allclose(sitk_world(path, ijk), loaded.voxel_to_world(ijk), atol=1e-4)
        if ext == ".nii.gz":
            np.testing.assert_allclose(nib.load(path).affine, loaded.affine, atol=1e-6)
            itk_array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
            np.testing.assert_array_equal(itk_array, loaded.array)


# ----------------------------------------------------------------------------- DICOM


def write_dicom_series(folder: Path, vol: Volume, series: str, prefix: str = "s") -> list[Path]:
    """Write a Volume as an MR DICOM series, one file per k slice, with position tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk_image(vol), sitk.sitkInt16)
    d = image.GetDirection()
    iop = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{k + 1}",
            "0020|000d": f"{UID_ROOT}.1",
            "0020|000e": series,
            "0020|0037": iop,
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0013": str(k + 1),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            slice_k.SetMetaData(tag, value)
        paths.append(folder / f"{prefix}{k:03d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(slice_k)
    return paths


def dicom_volume(offset: float = 0.0) -> Volume:
    return Volume(ramp((6, 7, 8)) + offset, make_affine((0.5, 0.75, 2.5), (10.0, -20.0, 30.0)))


def test_dicom_series_round_trip(tmp_path):
    vol = dicom_volume()
    write_dicom_series(tmp_path / "dcm", vol, f"{UID_ROOT}.2")
    loaded = load(tmp_path / "dcm")
    assert loaded.meta["format"] == "dicom" and loaded.meta["modality"] == "MR"
    assert loaded.shape == vol.shape
    np.testing.assert_allclose(loaded.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(loaded.array, vol.array)
    back = load_label(save_mask(label_of(vol.array), loaded, tmp_path / "m.nii.gz"), like=loaded)
    np.testing.assert_array_equal(back.array, label_of(vol.array))


def test_dicom_folder_with_two_series(tmp_path):
    first, second = f"{UID_ROOT}.3", f"{UID_ROOT}.4"
    write_dicom_series(tmp_path / "dcm", dicom_volume(), first, prefix="a")
    write_dicom_series(tmp_path / "dcm", dicom_volume(1000.0), second, prefix="b")
    with pytest.raises(InputError, match="series_uid") as err:
        load(tmp_path / "dcm")
    assert first in str(err.value) and second in str(err.value)
    assert str(tmp_path / "dcm") in str(err.value)
    vol = load_dicom_series(tmp_path / "dcm", series_uid=second)
    np.testing.assert_array_equal(vol.array, dicom_volume(1000.0).array)
    with pytest.raises(InputError, match=first):
        load_dicom_series(tmp_path / "dcm", series_uid=f"{UID_ROOT}.99")


def test_dicom_missing_slice_refused(tmp_path):
    paths = write_dicom_series(tmp_path / "dcm", dicom_volume(), f"{UID_ROOT}.5")
    paths[3].unlink()
    with pytest.raises(InputError, match="1 slice.s. missing") as err:
        load(tmp_path / "dcm")
    assert str(tmp_path / "dcm") in str(err.value)


def test_dicom_uneven_spacing_refused(tmp_path):
    vol = dicom_volume()
    write_dicom_series(tmp_path / "a", vol, f"{UID_ROOT}.6")
    image = sitk.ReadImage(str(tmp_path / "a" / "s004.dcm"))
    z = [float(v) for v in image.GetMetaData("0020|0032").split("\\")]
    image.SetMetaData("0020|0032", f"{z[0]}\\{z[1]}\\{z[2] + 1.0}")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "a" / "s004.dcm"))
    writer.Execute(image)
    with pytest.raises(InputError, match="unevenly spaced"):
        load(tmp_path / "a")


def test_empty_folder_refused(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        load(tmp_path)


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load(tmp_path / "nope.nii.gz")
    assert err.value.path == tmp_path / "nope.nii.gz"


@pytest.mark.parametrize("name", ["junk.nii.gz", "junk.nii", "junk.nrrd", "junk.mha"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="cannot be read") as err:
        load(path)
    assert str(path) in str(err.value)


def test_truncated_nifti(tmp_path):
    path = save_volume(Volume(ramp((20, 20, 20)), make_affine()), tmp_path / "i.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot be read"):
        load(path)


@pytest.mark.parametrize("name", ["img.png", "img.dcm", "img"])
def test_unknown_extension(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="unknown image file ending") as err:
        load(path)
    assert err.value.path == path


@pytest.mark.parametrize("shape", [(10, 12), (10, 12, 1)])
def test_2d_image_refused(tmp_path, shape):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match="2D") as err:
        load(path)
    assert err.value.path == path


def test_2d_itk_image_refused(tmp_path):
    path = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="2D"):
        load(path)


def test_4d_channels(tmp_path):
    data = np.stack([ramp() + 1000 * c for c in range(3)], axis=-1)
    path = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(data, make_affine()), str(path))
    with pytest.raises(InputError, match="3 channels") as err:
        load(path)
    assert "channel=" in str(err.value) and str(path) in str(err.value)
    np.testing.assert_array_equal(load(path, channel=2).array, ramp() + 2000)
    with pytest.raises(InputError, match="out of range"):
        load(path, channel=3)


def test_4d_itk_channels(tmp_path):
    data = np.stack([ramp() + 1000 * c for c in range(2)], axis=-1)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0, 3), isVector=True)
    path = tmp_path / "vec.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="2 channels"):
        load(path)
    np.testing.assert_array_equal(load(path, channel=1).array, ramp() + 1000)


def test_rgb_nifti_is_read_as_channels(tmp_path):
    """RGB24/RGBA32 NIfTI (a structured value per voxel) became a 500 in the server."""
    fields = [("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")]
    for n in (3, 4):
        data = np.zeros((6, 7, 8), dtype=fields[:n])
        data["G"] = ramp().astype(np.uint8)
        path = tmp_path / f"rgb{n}.nii.gz"
        nib.save(nib.Nifti1Image(data, make_affine()), str(path))
        with pytest.raises(InputError, match=f"{n} channels"):
            load(path)
        np.testing.assert_array_equal(load(path, channel=1).array, ramp().astype(np.uint8))


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_complex_images_refused(tmp_path, ext):
    """Casting to float32 dropped the imaginary part without a word."""
    data = (ramp() + 1j * ramp()).astype(np.complex64)
    path = tmp_path / f"c{ext}"
    if ext == ".nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(data.transpose(2, 1, 0)), str(path))
    else:
        nib.save(nib.Nifti1Image(data, make_affine()), str(path))
    with pytest.raises(InputError, match="holds complex values"):
        load(path)


def test_dicom_slice_of_another_size_refused_before_reading(tmp_path, monkeypatch):
    """A damaged or foreign file sorted first sized the whole volume (the series reader,
    and the server's voxel limit, take the first file's header): every slice's header is
    now compared before any pixel data is read."""
    paths = write_dicom_series(tmp_path / "dcm", dicom_volume(), f"{UID_ROOT}.7")
    first = sitk.ReadImage(str(paths[0]))
    other = sitk.Image(40, 30, sitk.sitkInt16)
    for key in first.GetMetaDataKeys():
        other.SetMetaData(key, first.GetMetaData(key))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(paths[0]))
    writer.Execute(other)

    def no_read(self):
        raise AssertionError("pixel data read before the slices were compared")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", no_read)
    with pytest.raises(InputError, match="slices of the series differ.*40 x 30"):
        load(tmp_path / "dcm")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_intensities_refused(tmp_path, bad):
    data = ramp()
    data[2, 2, 2] = bad
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, make_affine()), str(path))
    with pytest.raises(InputError, match="NaN or infinite") as err:
        load(path)
    assert err.value.path == path


def sheared_nifti(path: Path, qform_code: int) -> tuple[Path, np.ndarray]:
    good = make_affine()
    sheared = good.copy()
    sheared[0, 1] = 0.4
    img = nib.Nifti1Image(ramp(), sheared)
    img.set_qform(good, code=qform_code)
    img.set_sform(sheared, code=2)
    nib.save(img, str(path))
    return path, good


def test_sheared_sform_falls_back_to_qform(tmp_path, caplog):
    path, good = sheared_nifti(tmp_path / "shear.nii.gz", qform_code=1)
    with caplog.at_level(logging.WARNING, logger="mecca.io"):
        vol = load(path)
    np.testing.assert_allclose(vol.affine, good, atol=1e-6)
    assert vol.meta["affine_source"] == "qform"
    assert "qform" in caplog.text
    out = save_mask(np.ones(vol.shape, np.uint8), vol, tmp_path / "m.nii.gz")
    assert int(raw_nifti_header(out)["sform_code"]) == 2  # header copied as it was
    np.testing.assert_allclose(load_label(out, like=vol).affine, good, atol=1e-6)


def test_sheared_sform_without_qform_refused(tmp_path):
    path, _ = sheared_nifti(tmp_path / "shear.nii.gz", qform_code=0)
    with pytest.raises(GeometryError, match="sheared") as err:
        load(path)
    assert err.value.path == path


def test_sheared_nrrd_refused(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.float32))
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "shear.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(GeometryError, match="sheared"):
        load(path)


def test_label_grid_must_match(tmp_path):
    like = Volume(ramp(), make_affine())
    other_shape = save_mask(
        np.zeros((6, 7, 9), np.uint8), Volume(ramp((6, 7, 9)), like.affine), tmp_path / "a.nii.gz"
    )
    with pytest.raises(GeometryError, match="shape") as err:
        load_label(other_shape, like=like)
    assert err.value.path == other_shape
    for shift, ok in [(1e-5, True), (0.01, False)]:
        moved = like.affine.copy()
        moved[0, 3] += shift
        path = save_mask(
            np.zeros(like.shape, np.uint8),
            Volume(like.array, moved),
            tmp_path / "b.nrrd",
            force=True,
        )
        if ok:
            load_label(path, like=like)
        else:
            with pytest.raises(GeometryError, match="mm away"):
                load_label(path, like=like)


def test_label_values_must_be_whole(tmp_path):
    path = save_volume(Volume(ramp() / 7, make_affine()), tmp_path / "frac.nii.gz")
    with pytest.raises(InputError, match="whole numbers"):
        load_label(path, like=load(path))


# ----------------------------------------------------------------------------- writing safely


def test_no_overwrite_without_force(tmp_path):
    like = Volume(ramp(), make_affine())
    path = save_mask(np.zeros(like.shape, np.uint8), like, tmp_path / "m.nii.gz")
    with pytest.raises(OverwriteError, match="force") as err:
        save_mask(np.ones(like.shape, np.uint8), like, path)
    assert err.value.path == path
    assert load_label(path, like=like).array.max() == 0
    save_mask(np.ones(like.shape, np.uint8), like, path, force=True)
    assert load_label(path, like=like).array.min() == 1


def failing_writer(*args, **kwargs):
    """Stands in for a library writer that dies after writing half a file."""
    target = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, str))
    Path(target).write_bytes(b"half a file")
    raise OSError("disk full")


@pytest.mark.parametrize(("ext", "target"), [(".nii.gz", "nib.save"), (".nrrd", "sitk.WriteImage")])
def test_failed_write_leaves_the_original_untouched(tmp_path, monkeypatch, ext, target):
    like = Volume(ramp(), make_affine())
    path = save_mask(np.zeros(like.shape, np.uint8), like, tmp_path / f"m{ext}")
    before = path.read_bytes()
    module, name = target.split(".")
    monkeypatch.setattr(getattr(io, module), name, failing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_mask(np.ones(like.shape, np.uint8), like, path, force=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_gipl_brain_and_label(shared_data):
    image_path = shared_data / "misc" / "imagesTr" / "itksnap_brain.gipl.gz"
    vol = load(image_path)
    label = load_label(shared_data / "misc" / "labelsTr" / "itksnap_brain.gipl.gz", like=vol)
    assert vol.meta["format"] == "gipl"
    assert vol.shape == label.shape == (78, 110, 64)
    assert all(0.1 < s < 5.0 for s in vol.spacing)
    assert set(np.unique(label.array)) <= set(range(9)) and label.array.max() > 0


@pytest.mark.shared_data
def test_real_hippocampus_case(shared_data, tmp_path):
    name = "hippocampus_001.nii.gz"
    vol = load(shared_data / "hippocampus" / "imagesTr" / name)
    label = load_label(shared_data / "hippocampus" / "labelsTr" / name, like=vol)
    assert vol.shape == label.shape and vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.spacing, (1.0, 1.0, 1.0), atol=1e-3)
    assert set(np.unique(label.array)) == {0, 1, 2}
    out = save_mask(label.array, vol, tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(load_label(out, like=vol).array, label.array)
