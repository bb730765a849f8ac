"""Image files in, arrays/tensors out: the only place that knows about file formats.

Conventions (see also ``docs/CONTRACTS.md``):

* :func:`read_image` returns ``float32`` ``H x W x C`` in ``[0, 1]`` with ``C`` = 1 (gray) or 3 (RGB).
* Intensity scaling is by the storage type, never min-max, so that a dark image stays dark:
  8-bit / 1-bit by 255 / 1, 16-bit (PIL modes ``I;16*``, 16-bit PNG/TIFF) by 65535, 32-bit integer
  (mode ``I``) by 65535 when the values fit in 16 bits (how Pillow opens some 16-bit files) else
  min-max, float (mode ``F``) kept when it lies in [0, 1] else min-max.
  16-bit *RGB* PNGs are reduced to 8 bits by Pillow; that precision is lost.
* RGBA / LA: the alpha channel is dropped. Palette (``P``), CMYK, YCbCr, ... -> RGB.
* DICOM (``.dcm``, read with pydicom, imported lazily): first frame of multi-frame files;
  RescaleSlope/RescaleIntercept applied; window from WindowCenter/WindowWidth (first value when
  multi-valued; linear, ``[c - w/2, c + w/2] -> [0, 1]``), else the 0.5-99.5 percentile range;
  MONOCHROME1 inverted (``1 - v``) after windowing; colour DICOM scaled by ``2**BitsStored - 1``.
* NIfTI (``.nii``/``.nii.gz``, read with nibabel, imported lazily; :mod:`medxgan.data.nifti`): a volume stands
  for its slices, each addressed as ``file.nii.gz#z=42``; windowed by percentiles of the volume's foreground.
* Model tensors (:func:`image_to_tensor`, :func:`load_image_tensor`) are ``C x H x W`` in ``[-1, 1]``.
  Resizing: antialiased bilinear (Pillow, per channel, float) for images, nearest neighbour for
  masks; ``size=int`` gives a square (aspect ratio not kept, no crop). ``channels=1`` from RGB uses
  luminance 0.2989 R + 0.5870 G + 0.1140 B; ``channels=3`` from gray repeats the plane.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from medxgan.data.nifti import NIFTI_SUFFIXES, NiftiOptions, expand_volume, is_nifti_name, is_slice_ref
from medxgan.data.optional import import_reader
from medxgan.runtime.errors import MedxganError

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm",)
NIFTI_EXTENSIONS = NIFTI_SUFFIXES
IMAGE_EXTENSIONS = PIL_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS
LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a supported extension (case-insensitive; NIfTI volumes and slice references included); does not
    look inside the file."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS or is_nifti_name(path)


def is_dicom(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in DICOM_EXTENSIONS


# ----------------------------------------------------------------------------------------------
# cheap header check (index time)


@dataclass(frozen=True)
class ImageInfo:
    """What a header says: height, width, channels after :func:`read_image` (1 or 3)."""

    height: int
    width: int
    channels: int


_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def probe_image(path: str | os.PathLike, verify: bool = True) -> ImageInfo:
    """Read the header (and, for Pillow formats, verify the stream) without decoding pixels.

    Raises MedxganError naming the file when it is missing, not an image, or (``verify``) visibly
    corrupt (truncated PNG, bad CRC). Some damage is only found at decode time by :func:`read_image`.
    """
    p = Path(path)
    if is_nifti_name(p):
        from medxgan.data.nifti import slice_shape

        h, w = slice_shape(_single_slice(p))
        return ImageInfo(h, w, 1)
    if not p.is_file():
        raise MedxganError(f"{p}: file not found")
    if is_dicom(p):
        pydicom = import_reader("pydicom", p, "DICOM files", "dicom")
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
            spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        except Exception as e:  # InvalidDicomError, missing tags, garbage
            raise MedxganError(f"{p}: not a readable DICOM image ({type(e).__name__}: {e})") from None
        return ImageInfo(rows, cols, 3 if spp >= 3 else 1)
    try:
        with Image.open(p) as im:
            w, h = im.size
            mode = im.mode
            if verify:
                im.verify()
    except UnidentifiedImageError:
        raise MedxganError(f"{p}: not a readable image (unknown or corrupt format)") from None
    except Exception as e:
        raise MedxganError(f"{p}: corrupt image file ({type(e).__name__}: {e})") from None
    return ImageInfo(h, w, 1 if mode in _GRAY_MODES else 3)


def probe_mask(path: str | os.PathLike, verify: bool = True) -> ImageInfo:
    """:func:`probe_image` for a mask file (a NIfTI mask slice is read unwindowed, value > 0)."""
    if is_nifti_name(path):
        m = read_mask(path)
        return ImageInfo(m.shape[0], m.shape[1], 1)
    return probe_image(path, verify=verify)


def _single_slice(p: Path) -> Path:
    """A slice reference as is; a bare volume only when it has a single slice (a 2-D NIfTI image)."""
    if is_slice_ref(p):
        return p
    refs = expand_volume(p, NiftiOptions(min_foreground=0.0))
    if len(refs) != 1:
        raise MedxganError(f"{p}: a NIfTI volume of {len(refs)} slices: name one slice ({p.name}#z=INDEX), or give the file to "
                           "a command that takes folders and files (it then stands for its slices)")
    return refs[0]


# ----------------------------------------------------------------------------------------------
# full decode


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        a = np.asarray(im, dtype=np.float32)
    elif mode in ("L", "LA", "La"):
        a = np.asarray(im.getchannel(0) if mode != "L" else im, dtype=np.float32) / 255.0
    elif mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            a = a / 65535.0
        else:
            a = _minmax(a)
        a = a.astype(np.float32)
    elif mode == "F":
        a = np.asarray(im).astype(np.float32)
        if a.size and not (np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0):
            a = _minmax(a).astype(np.float32)
    elif mode == "RGB":
        a = np.asarray(im, dtype=np.float32) / 255.0
    else:  # RGBA, P, PA, CMYK, YCbCr, LAB, HSV, RGBX, ...
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(np.nan_to_num(a, nan=0.0).clip(0.0, 1.0), dtype=np.float32)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float64)
    return (a - lo) / (hi - lo)


def _first(value) -> float | None:
    """First value of a possibly multi-valued DICOM element, or None."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _dicom_to_array(path: Path) -> np.ndarray:
    pydicom = import_reader("pydicom", path, "DICOM files", "dicom")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise MedxganError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise MedxganError(f"{path}: DICOM file has no pixel data")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:
        raise MedxganError(
            f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e}); compressed transfer syntaxes "
            "may need pylibjpeg/gdcm"
        ) from None
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:  # first frame only
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp >= 3:
        if arr.ndim != 3:
            raise MedxganError(f"{path}: colour DICOM with unexpected pixel array shape {arr.shape}")
        if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            from pydicom.pixel_data_handlers.util import convert_color_space  # pydicom 2.x only

            arr = convert_color_space(arr, photometric, "RGB")
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        out = arr[..., :3].astype(np.float32) / float(2**bits - 1)
        return np.ascontiguousarray(out.clip(0.0, 1.0), dtype=np.float32)

    if arr.ndim != 2:
        raise MedxganError(f"{path}: grayscale DICOM with unexpected pixel array shape {arr.shape}")
    a = arr.astype(np.float64)
    slope = _first(getattr(ds, "RescaleSlope", None))
    intercept = _first(getattr(ds, "RescaleIntercept", None))
    a = a * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    center = _first(getattr(ds, "WindowCenter", None))
    width = _first(getattr(ds, "WindowWidth", None))
    if center is not None and width is not None and width > 0:
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    if hi > lo:
        a = (a - lo) / (hi - lo)
    else:
        a = np.zeros_like(a)
    a = a.clip(0.0, 1.0)
    if photometric == "MONOCHROME1":
        a = 1.0 - a
    return np.ascontiguousarray(a[:, :, None], dtype=np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to ``float32`` ``H x W x C`` in ``[0, 1]`` (C = 1 or 3).

    Raises MedxganError naming the file for a missing/unsupported/corrupt file.
    """
    p = Path(path)
    if is_nifti_name(p):
        from medxgan.data.nifti import read_slice

        return read_slice(_single_slice(p))
    if not p.is_file():
        raise MedxganError(f"{p}: file not found")
    if is_dicom(p):
        return _dicom_to_array(p)
    if p.suffix.lower() not in PIL_EXTENSIONS:
        raise MedxganError(f"{p}: unsupported image type {p.suffix!r} (supported: {', '.join(IMAGE_EXTENSIONS)})")
    try:
        with Image.open(p) as im:
            im.load()
            return _pil_to_array(im)
    except UnidentifiedImageError:
        raise MedxganError(f"{p}: not a readable image (unknown or corrupt format)") from None
    except MedxganError:
        raise
    except Exception as e:  # truncated, bad CRC, decoder errors
        raise MedxganError(f"{p}: corrupt image file ({type(e).__name__}: {e})") from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as ``bool`` ``H x W`` (any channel > 0.5 after scaling to [0, 1]; a NIfTI slice: value > 0)."""
    if is_nifti_name(path):
        from medxgan.data.nifti import read_mask_slice

        return read_mask_slice(_single_slice(Path(path)))
    a = read_image(path)
    return (a > 0.5).any(axis=2)


# ----------------------------------------------------------------------------------------------
# resizing, channels, tensors


def normalize_size(size) -> tuple[int, int] | None:
    """``None`` -> None, ``int`` -> (size, size), ``(h, w)`` -> (h, w); MedxganError otherwise."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise MedxganError(f"size: expected an int or (height, width), got {size!r}")
    if hw[0] < 1 or hw[1] < 1:
        raise MedxganError(f"size: must be positive, got {size!r}")
    return hw


def resize_image(a: np.ndarray, size) -> np.ndarray:
    """Antialiased bilinear resize of ``H x W x C`` float32 to ``size`` (int or (h, w))."""
    hw = normalize_size(size)
    if hw is None or a.shape[:2] == hw:
        return a
    h, w = hw
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[:, :, c], dtype=np.float32)).resize((w, h), Image.BILINEAR))
        for c in range(a.shape[2])
    ]
    return np.stack(planes, axis=2).astype(np.float32).clip(0.0, 1.0)


def resize_mask(m: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask (pixel centres: ``src = floor((dst + 0.5) * in / out)``)."""
    hw = normalize_size(size)
    if hw is None or m.shape[:2] == hw:
        return m
    h, w = hw
    H, W = m.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return m[rows][:, cols]


def convert_channels(a: np.ndarray, channels: int | None) -> np.ndarray:
    """``H x W x C`` -> ``H x W x channels`` (1: luminance, 3: gray repeated); None keeps C."""
    if channels is None or a.shape[2] == channels:
        return a
    if channels == 1:
        return (a[:, :, :3] @ LUMA)[:, :, None].astype(np.float32)
    if channels == 3:
        return np.repeat(a[:, :, :1], 3, axis=2)
    raise MedxganError(f"channels: expected 1, 3 or None, got {channels!r}")


def check_channels(channels) -> int | None:
    if channels is None:
        return None
    if channels not in (1, 3) or isinstance(channels, bool):
        raise MedxganError(f"channels: expected 1, 3 or None, got {channels!r}")
    return int(channels)


def image_to_tensor(a: np.ndarray, size=None, channels: int | None = None):
    """``H x W x C`` in [0, 1] -> torch ``C x H x W`` float32 in [-1, 1] (resized, channel-converted)."""
    import torch

    a = convert_channels(resize_image(a, size), check_channels(channels))
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).mul_(2.0).sub_(1.0)


def load_image_tensor(path: str | os.PathLike, size=None, channels: int | None = None):
    """Read one file as a model batch ``1 x C x H x W`` float32 in [-1, 1] (e.g. for ``medxgan explain``)."""
    return image_to_tensor(read_image(path), size=size, channels=channels).unsqueeze(0)


def source_file(path: str | os.PathLike) -> Path:
    """The file behind an input: itself, or the volume of a NIfTI slice reference (``v.nii.gz#z=4`` -> ``v.nii.gz``)."""
    return Path(str(path).split("#", 1)[0]) if is_slice_ref(path) else Path(path)


def image_stem(path: str | os.PathLike) -> str:
    """A name for outputs about one input: the file stem, or for a NIfTI slice ``v#z=4`` (``v.nii.gz#z=4``)."""
    from medxgan.data.nifti import nifti_stem

    return Path(nifti_stem(Path(path).name)).name if is_nifti_name(path) else Path(path).stem


def collect_image_files(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files and folders (searched recursively, sorted) -> image files, first occurrence order, no duplicates.

    MedxganError for a missing path, a file with an unsupported extension, a folder without images,
    or no inputs at all.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[Path] = set()
    n_inputs = 0
    for item in inputs:
        n_inputs += 1
        p = Path(item)
        if is_slice_ref(p):
            from medxgan.data.nifti import split_ref

            if not split_ref(p)[0].is_file():
                raise MedxganError(f"{p}: no such file ({split_ref(p)[0]})")
            found = [p]
        elif not p.exists():
            raise MedxganError(f"{p}: no such file or folder")
        elif p.is_dir():
            found = list_images(p)
            if not found:
                raise MedxganError(f"{p}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif is_nifti_name(p):
            found = expand_volume(p)
        elif is_image_file(p):
            found = [p]
        else:
            raise MedxganError(f"{p}: unsupported image type {p.suffix!r} (supported: {', '.join(IMAGE_EXTENSIONS)})")
        for f in found:
            key = Path(str(f.parent.resolve() / f.name))  # a slice reference's file need not exist as named
            if key not in seen:
                seen.add(key)
                out.append(f)
    if n_inputs == 0:
        raise MedxganError("inputs: no image files or folders given")
    return out


def list_images(folder: Path, nifti: NiftiOptions | None = None, expand: bool = True) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files/folders skipped), sorted by relative path; a NIfTI
    volume stands for its slice references (``nifti``: which slices; ``expand=False`` keeps the volume file)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image_file(name):
                found.append(Path(dirpath) / name)
    found = sorted(found, key=lambda f: f.relative_to(folder).as_posix())
    if not expand or not any(is_nifti_name(f) for f in found):
        return found
    return [r for f in found for r in (expand_volume(f, nifti) if is_nifti_name(f) else [f])]
