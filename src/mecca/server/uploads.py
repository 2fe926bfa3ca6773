"""Taking images from the outside safely: size limits before reading, safe unpacking,
and no image that makes the server read a file it was not given.

* The voxel count comes from the header (nibabel reads a NIfTI header without the data;
  SimpleITK's ``ReadImageInformation`` does the same for NRRD/MHA/GIPL; a DICOM series
  counts its files times one slice), so an oversized image is refused before its data is
  decompressed (a gzip bomb never inflates).
* ZIP archives are checked entry by entry: total unpacked size, entry count, names (no
  absolute paths, no ``..``, no links), no encryption, a compression method Python reads,
  before anything is written. A DICOM series is unpacked under server-chosen names; an
  archive with exactly one ``.mhd``/``.nhdr`` header is unpacked under its entries' plain
  base names (so the header finds its data file), duplicates refused.
* Data files (:func:`check_image_file`): a MetaImage or NRRD header may name its voxel
  data in another file, anywhere (``ElementDataFile = /etc/passwd``, ``data file:
  ../x``), and the readers open whatever it names. Every image is checked before it is
  read: the file itself is a regular file (no link, FIFO or device), and each data file
  its header names is a regular file inside the folder the image came from (the upload's
  own folder, or the image root). List and pattern forms (``LIST``, ``%d``) are refused,
  as they cannot be checked file by file.
* Uploads come only with the content types the page and 3D Slicer send
  (:data:`UPLOAD_TYPES`): a cross-site form or ``text/plain`` request is not one of them.
"""

from __future__ import annotations

import lzma
import math
import os
import stat
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import anyio
import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mecca.errors import InputError
from mecca.io import file_extension, itk_reader

IMAGE_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
DETACHED_HEADERS = (".mhd", ".nhdr")
"""Header-only formats: their voxels are always in another file."""
ITK_HEADERS = (".mha", ".mhd", ".nhdr", ".nrrd")
"""Formats whose header may name a data file (MetaImage, NRRD)."""
UPLOAD_TYPES = (
    "application/octet-stream",
    "application/gzip",
    "application/x-gzip",
    "application/zip",
    "application/x-zip-compressed",
)
"""Content types ``POST /api/sessions/upload`` takes (the page sends the first)."""
MAX_ZIP_ENTRIES = 20000
MAX_NAME_BYTES = 255
"""Longest upload file name (a file system's limit for one name)."""
MAX_HEADER_BYTES = 1 << 20
"""How much of a MetaImage/NRRD file is read for its header (real headers are a few kB)."""
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
WRITE_CHUNK = 1 << 20


def check_upload_type(content_type: str | None) -> str | None:
    """The refusal message for an upload's Content-Type, or None when it is accepted."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in UPLOAD_TYPES:
        return None
    return (
        f"an upload must be sent as {UPLOAD_TYPES[0]} (or a gzip/zip type);"
        f" got {media[:80] or 'no Content-Type'}"
    )


async def save_body(chunks: AsyncIterator[bytes], path: Path) -> int:
    """Write a streamed request body to ``path``; returns its size. Writes run in a worker
    thread 1 MiB at a time, so a slow disk never holds up the event loop."""
    size, pending = 0, bytearray()
    async with await anyio.open_file(path, "wb") as fh:
        async for chunk in chunks:
            pending += chunk
            size += len(chunk)
            if len(pending) >= WRITE_CHUNK:
                await fh.write(bytes(pending))
                pending.clear()
        await fh.write(bytes(pending))
    return size


def _check_name(name: str, what: str) -> None:
    """Refuse a client's file name with control characters (NUL included) or too long."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InputError(
            f"{what} holds control characters (such as NUL or a line break)",
            hint="rename the file",
        )
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InputError(f"{what} is longer than {MAX_NAME_BYTES} bytes", hint="rename the file")


def safe_filename(name: str) -> str:
    """A client's file name reduced to a plain basename with a known image ending.

    A ``.mhd``/``.nhdr`` header alone is refused: its voxels are in another file, which
    only a ``.zip`` holding both can bring along.
    """
    _check_name(name, "the file name")
    base = PurePosixPath(name.replace("\\", "/")).name
    ending = file_extension(base)
    if ending not in (*IMAGE_ENDINGS, ".zip"):
        raise InputError(
            f"unsupported upload type {ending or '(none)'!r}",
            hint="upload a NIfTI, NRRD, MHA or GIPL file, or a DICOM folder as .zip",
        )
    if ending in DETACHED_HEADERS:
        raise InputError(
            f"a {ending} file is only a header: its voxels are in a data file it names",
            hint=f"upload the {ending} header and its data file together in one .zip",
        )
    return f"upload{ending}"


# ----------------------------------------------------------------------------- data files


def _header_lines(text: str) -> Iterator[str]:
    """Lines of a header (LF or CR LF ends), one at a time, so that the data after the
    header is never looked at: a bare CR is refused where it is met, as teem and MetaIO
    may not agree on it being a line break."""
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if "\r" in line:
            raise InputError(
                "the header has a bare carriage return (CR) inside a line",
                hint="save the header with LF or CR LF line ends",
            )
        yield line


def _nrrd_data_files(text: str) -> tuple[list[str], bool]:
    """``data file`` values of a NRRD header (teem's field names: any case, spaces
    ignored; comments and ``key:=value`` pairs skipped), and whether the header ended
    (a blank line) within ``text``."""
    names: list[str] = []
    for n, line in enumerate(_header_lines(text)):
        if n == 0:  # the magic, NRRD000X
            continue
        if not line:
            return names, True
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and not value.startswith("=") and "".join(key.split()).lower() == "datafile":
            names.append(value.strip())
    return names, False


def _metaimage_data_files(text: str) -> tuple[list[str], bool]:
    """The ``ElementDataFile`` value of a MetaImage header (``=`` or ``:`` separated; any
    case), and whether it was found within ``text`` (MetaIO's header ends there)."""
    for line in _header_lines(text):
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut >= 0 and "".join(line[:cut].split()).lower() == "elementdatafile":
            return [line[cut + 1 :].strip()], True
    return [], False


def header_data_files(path: Path) -> list[str]:
    """The data file names a MetaImage/NRRD file's header gives, read from the first
    :data:`MAX_HEADER_BYTES` only; empty when the data is in the file itself (``LOCAL``,
    or a NRRD without a ``data file`` field)."""
    with path.open("rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    text = head.decode("latin-1")
    nrrd = file_extension(path) in (".nrrd", ".nhdr")
    names, ended = (_nrrd_data_files if nrrd else _metaimage_data_files)(text)
    if not ended and len(head) > MAX_HEADER_BYTES:
        raise InputError(
            f"the header is longer than {MAX_HEADER_BYTES} bytes", path=path, hint="re-export it"
        )
    return [n for n in names if n.upper() != "LOCAL"]


def _shown(name: str) -> str:
    """A header's data file name as an error shows it: its last part only (a header under
    an image root may name server paths)."""
    return PurePosixPath(name.replace("\\", "/")).name[:80]


def _check_data_name(name: str, header: Path) -> None:
    """Refuse a data file field that does not name one plain file: lists, patterns, and
    forms the readers interpret their own way (``C:x`` is absolute to teem)."""
    if name.upper().startswith("LIST"):
        raise InputError(
            "the header lists several data files (LIST), which is not accepted here",
            path=header,
            hint="save the image as one .nrrd, .mha or .nii.gz file",
        )
    odd = [c for c in ("%", ":", "\\") if c in name]
    if not name or odd or any(c.isspace() or ord(c) < 32 for c in name):
        raise InputError(
            f"the header's data file {_shown(name)!r} is not a plain file name",
            path=header,
            hint="name one data file beside the header, without spaces, %, : or \\",
        )


def _check_plain_file(
    path: Path, base: Path, what: str, image: Path, *, folder_ok: bool = False
) -> None:
    """Refuse ``path`` unless it resolves inside ``base`` and is itself a regular file
    (or, with ``folder_ok``, a folder): no symbolic link, FIFO, device or socket. Errors
    name ``image`` (the file the client chose), never the path a header gave."""
    try:
        inside = path.resolve().is_relative_to(base)
        mode = os.lstat(path).st_mode if inside else 0
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", path=image, hint="check the file") from None
    except (OSError, RuntimeError, ValueError):  # too long, a link loop, a NUL
        raise InputError(f"{what} cannot be opened", path=image) from None
    if not inside:
        raise InputError(
            f"{what} lies outside the folder the image was opened from",
            path=image,
            hint="a header's data file must lie beside it (in the same upload or image root)",
        )
    if stat.S_ISLNK(mode):
        raise InputError(f"{what} is a symbolic link, which is not followed", path=image)
    if not (stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode))):
        raise InputError(f"{what} is not a regular file (a FIFO, device or socket)", path=image)


def check_image_file(path: Path, *, inside: Path) -> None:
    """Refuse an image the readers could be made to read another file through.

    ``path`` (a file, or a DICOM series folder) must be a regular file inside ``inside``;
    a series folder may hold only regular files and folders (GDCM opens every file in it);
    a MetaImage/NRRD header may name only regular files inside ``inside`` as its data.
    """
    base = inside.resolve()
    _check_plain_file(path, base, "the image", path, folder_ok=True)
    if stat.S_ISDIR(os.lstat(path).st_mode):
        with os.scandir(path) as entries:
            for entry in entries:
                if not (
                    entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)
                ):
                    raise InputError(
                        f"the folder holds {entry.name[:80]!r}, which is not a regular file",
                        path=path,
                        hint="a DICOM folder may hold files and folders only (no links, FIFOs)",
                    )
        return
    if file_extension(path) not in ITK_HEADERS:
        return
    for name in header_data_files(path):
        _check_data_name(name, path)
        _check_plain_file(path.parent / name, base, f"its data file {_shown(name)!r}", path)


# ----------------------------------------------------------------------------- size


def image_voxels(path: Path) -> int:
    """Voxels of the image at ``path`` (file or DICOM folder), from headers only."""
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise InputError("no DICOM series in the upload", hint="zip the series folder")
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        size = reader.GetSize()  # a multi-frame file counts all its frames
        return int(np.prod(size)) * len(files) * reader.GetNumberOfComponents()
    if file_extension(path) in (".nii", ".nii.gz"):
        try:
            shape = nib.load(str(path)).header.get_data_shape()  # type: ignore[attr-defined]
        except Exception as exc:  # nibabel raises many kinds on a bad header
            raise InputError(f"not a readable NIfTI file ({type(exc).__name__})") from None
        return math.prod(int(n) for n in shape)
    reader = itk_reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("not a readable image file", hint="check the file") from None
    return int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()


def check_voxels(path: Path, max_voxels: int) -> int:
    """Refuse an image larger than ``max_voxels``; returns its voxel count."""
    voxels = image_voxels(path)
    if voxels > max_voxels:
        raise InputError(
            f"the image has {voxels} voxels, more than this server accepts ({max_voxels})",
            hint="crop or downsample it, or start the server with a larger --max-voxels",
        )
    return voxels


# ----------------------------------------------------------------------------- ZIP


def _skipped(name: PurePosixPath) -> bool:
    """Entries a header archive leaves out: macOS metadata and hidden files."""
    return name.parts[:1] == ("__MACOSX",) or name.name.startswith(".")


def _target_names(entries: list[zipfile.ZipInfo]) -> tuple[list[str | None], int | None]:
    """Names to unpack each entry to (None: skipped) and the index of the header, if any.

    A DICOM series gets server-chosen names (``000000.dcm``...); an archive with one
    ``.mhd``/``.nhdr`` header gets its entries' plain base names, so the header finds its
    data file; two entries with one base name (any case) are refused.
    """
    paths = [PurePosixPath(e.filename.replace("\\", "/")) for e in entries]
    headers = [
        n
        for n, p in enumerate(paths)
        if not _skipped(p) and file_extension(p.name) in DETACHED_HEADERS
    ]
    if not headers:
        return [f"{n:06d}.dcm" for n in range(len(entries))], None
    if len(headers) > 1:
        raise InputError(
            f"the archive holds {len(headers)} .mhd/.nhdr headers",
            hint="zip one image: its header and its data file",
        )
    names: list[str | None] = []
    seen: set[str] = set()
    for p in paths:
        if _skipped(p):
            names.append(None)
            continue
        _check_name(p.name, "a file name in the archive")
        if not p.name:
            raise InputError("the archive holds an entry without a name")
        if p.name.casefold() in seen:
            raise InputError(
                f"the archive holds two files named {p.name[:80]!r}",
                hint="zip one image: its header and its data file, side by side",
            )
        seen.add(p.name.casefold())
        names.append(p.name)
    return names, headers[0]


def _check_entries(entries: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse an archive by its directory: too many or too large entries, unsafe names,
    links, encryption, compression methods Python cannot read."""
    if len(entries) > MAX_ZIP_ENTRIES:
        raise InputError(f"the archive holds more than {MAX_ZIP_ENTRIES} files")
    total = sum(e.file_size for e in entries)
    if total > max_bytes:
        raise InputError(f"the archive unpacks to {total} bytes, more than allowed ({max_bytes})")
    for entry in entries:
        name = PurePosixPath(entry.filename.replace("\\", "/"))
        mode = entry.external_attr >> 16
        if name.is_absolute() or ".." in name.parts or (mode & 0o170000) == 0o120000:
            raise InputError("the archive holds an unsafe entry (absolute, .. or link)")
        if entry.flag_bits & 0x1:
            raise InputError(
                "the archive is encrypted", hint="zip the files again without a password"
            )
        if entry.compress_type not in ZIP_METHODS:
            raise InputError(
                f"the archive uses a compression method this server cannot read"
                f" (method {entry.compress_type})",
                hint="zip the files again with the standard method (deflate)",
            )


def _copy_entry(src: IO[bytes], out: IO[bytes], size: int) -> None:
    """Copy one archive entry, stopping at its declared size (a lying header)."""
    remaining = size + 1
    while True:
        try:
            chunk = src.read(1 << 20)
        except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError):
            raise InputError(
                "the archive is damaged (an entry cannot be decompressed)",
                hint="zip the files again",
            ) from None
        if not chunk:
            return
        remaining -= len(chunk)
        if remaining < 0:
            raise InputError("the archive's sizes are inconsistent")
        out.write(chunk)


def unpack_zip(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack a ZIP into ``dest`` after checking every entry; returns ``dest`` (a DICOM
    series) or the header inside it (an archive with one ``.mhd``/``.nhdr`` header)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [e for e in zf.infolist() if not e.is_dir()]
            _check_entries(entries, max_bytes)
            names, header = _target_names(entries)
            dest.mkdir(parents=True, exist_ok=True)
            for entry, name in zip(entries, names, strict=True):
                if name is None:
                    continue
                # flat names: the client's folders are never used as paths
                with zf.open(entry) as src, (dest / name).open("xb") as out:
                    _copy_entry(src, out, entry.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError):
        raise InputError("not a valid ZIP archive") from None
    except NotImplementedError:  # flags only the local headers carry (strong encryption...)
        raise InputError(
            "the archive uses a ZIP feature this server cannot read",
            hint="zip the files again with the standard method (deflate), without a password",
        ) from None
    if header is None:
        return dest
    target = names[header]
    assert target is not None
    return dest / target
