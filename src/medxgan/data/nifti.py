"""NIfTI volumes (``.nii`` / ``.nii.gz``, read with nibabel, an optional extra) as 2-D slices.

A volume is one file that yields many images. Each slice is addressed by a *slice reference*: the file's
path with a fragment, ``brain.nii.gz#z=42`` (axial slice 42; ``x=`` sagittal, ``y=`` coronal; a 4-D file
also needs its frame, ``brain.nii.gz#t=0,z=42``). Everything that reads images (:func:`medxgan.data.imageio.read_image`,
``probe_image``, ``load_image_tensor``, the dataset index) accepts such references, and a ``.nii.gz`` file
in a class folder (or given to ``explain``) stands for all its slices that contain enough foreground.

How a slice is made (the same for every slice of a volume, so a lesion never rescales its slice):

* the volume is reoriented to the closest canonical (RAS+) orientation from its affine (nibabel), so
  ``z`` is always inferior -> superior; a slice is shown with anterior / superior at the top;
* intensities are windowed by percentiles (default 0.5 - 99.5 %) of the *foreground* voxels of the
  whole volume, never min-max per slice: foreground = voxels above Otsu's threshold of the volume, with
  enclosed holes (ventricles) filled per slice, so dark tissue inside the body still sets the low end;
* pixels are made square from the header's voxel spacing (linear interpolation on pixel centres,
  :func:`scipy.ndimage.zoom` with ``grid_mode=True``): the finer of the two in-plane spacings is kept;
* slices whose foreground covers less than ``min_foreground`` of the slice are skipped.

Mask / label volumes (``masks/`` trees, lesion regions) are read without windowing: a voxel is inside when
its value is > 0, resampled by nearest neighbour.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from medxgan.data.optional import import_reader
from medxgan.runtime.errors import MedxganError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
AXES = {"x": 0, "y": 1, "z": 2, "sagittal": 0, "coronal": 1, "axial": 2}
_FRAGMENT = re.compile(r"^(?:t=(\d+),)?([xyz])=(\d+)$")


@dataclass(frozen=True)
class NiftiOptions:
    """How a volume becomes slices: ``axis`` (x/y/z or sagittal/coronal/axial), ``frame`` (4-D files: which
    volume; None refuses a 4-D file with more than one frame), ``window`` (low/high percentiles of the
    foreground), ``min_foreground`` (fraction of the slice; thinner slices are skipped)."""

    axis: str = "z"
    frame: int | None = None
    window: tuple[float, float] = (0.5, 99.5)
    min_foreground: float = 0.1

    def checked(self, where: str = "nifti") -> NiftiOptions:
        if self.axis not in AXES:
            raise MedxganError(f"{where} axis {self.axis!r}: expected one of x, y, z, sagittal, coronal, axial")
        if self.frame is not None and (isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0):
            raise MedxganError(f"{where} frame {self.frame!r}: expected a non-negative integer")
        lo, hi = (float(v) for v in self.window)
        if not (0.0 <= lo < hi <= 100.0):
            raise MedxganError(f"{where} window {self.window!r}: expected percentiles 0 <= low < high <= 100")
        if not (0.0 <= float(self.min_foreground) < 1.0):
            raise MedxganError(f"{where} min_foreground {self.min_foreground!r}: expected a fraction in [0, 1)")
        return self

    @property
    def axis_letter(self) -> str:
        return "xyz"[AXES[self.axis]]


def is_nifti_name(name: str | os.PathLike) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` (case-insensitive), with or without a slice fragment."""
    base = str(name).split("#", 1)[0].lower()
    return base.endswith(NIFTI_SUFFIXES)


def is_slice_ref(path: str | os.PathLike) -> bool:
    return is_nifti_name(path) and "#" in str(path)


def nifti_stem(name: str) -> str:
    """``dir/brain.nii.gz#z=4`` -> ``dir/brain#z=4`` (the name without its volume suffix)."""
    base, _, frag = str(name).partition("#")
    for suf in NIFTI_SUFFIXES:
        if base.lower().endswith(suf):
            base = base[: -len(suf)]
            break
    return base + (f"#{frag}" if frag else "")


def split_ref(path: str | os.PathLike) -> tuple[Path, int | None, str, int]:
    """``a.nii.gz#t=1,z=42`` -> (Path("a.nii.gz"), 1, "z", 42); MedxganError for a malformed fragment."""
    text = str(path)
    base, sep, frag = text.partition("#")
    m = _FRAGMENT.match(frag) if sep else None
    if m is None:
        raise MedxganError(f"{text}: not a slice reference (expected FILE.nii.gz#z=INDEX, or #x= / #y=, "
                           "with t=FRAME, first for 4-D files)")
    return Path(base), (int(m.group(1)) if m.group(1) is not None else None), m.group(2), int(m.group(3))


def slice_ref(path: str | os.PathLike, axis: str, index: int, frame: int | None = None) -> Path:
    letter = "xyz"[AXES[axis]]
    return Path(f"{path}#" + (f"t={frame}," if frame is not None else "") + f"{letter}={int(index)}")


# ----------------------------------------------------------------------------------------------
# the volume, read once (cached: one file yields many slices)


@dataclass(frozen=True)
class Volume:
    """A canonical (RAS+) 3-D volume: ``data`` float32 X x Y x Z, ``spacing`` (3,) mm, ``foreground`` bool,
    ``window`` (low, high) intensity of the percentile window."""

    path: Path
    data: np.ndarray
    spacing: tuple[float, float, float]
    foreground: np.ndarray
    window: tuple[float, float]


def _load_canonical(path: Path, frame: int | None) -> tuple[np.ndarray, tuple[float, float, float]]:
    nib = import_reader("nibabel", path, "NIfTI volumes", "nifti")
    if not path.is_file():
        raise MedxganError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not hasattr(img, "affine") or img.affine is None:
            raise ValueError("no affine")
        if len(img.shape) == 2 and all(img.shape):  # a 2-D image stored as NIfTI: one axial slice
            img = nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, None], img.affine, img.header)
        img = nib.as_closest_canonical(img)
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except MedxganError:
        raise
    except Exception as e:  # ImageFileError, truncated gzip, bad header fields
        raise MedxganError(f"{path}: not a readable NIfTI volume ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if len(shape) < 3 or any(s == 0 for s in shape):
        raise MedxganError(f"{path}: NIfTI volume of shape {shape}: need a non-empty 3-D volume (or 4-D with a frame)")
    if len(shape) > 4 or (len(shape) == 4 and shape[3] > 1 and frame is None):
        raise MedxganError(f"{path}: NIfTI volume of shape {shape} has {int(np.prod(shape[3:]))} frames: choose one "
                           f"({path.name}#t=0,z=INDEX; dataset.json {{\"nifti\": {{\"frame\": 0}}}}; synth lesions --frame 0)")
    if len(shape) == 4 and frame is not None and frame >= shape[3]:
        raise MedxganError(f"{path}: frame {frame} out of range (the volume has {shape[3]} frames)")
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise MedxganError(f"{path}: NIfTI header has invalid voxel spacing {zooms} (need finite sizes > 0)")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise MedxganError(f"{path}: cannot read the NIfTI voxel data ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if data.ndim == 4:
        data = data[..., frame or 0]
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise MedxganError(f"{path}: NIfTI volume contains NaN or infinite values ({int((~np.isfinite(data)).sum())} voxels)")
    return data, zooms  # type: ignore[return-value]


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Voxels above Otsu's threshold of the volume, enclosed holes filled slice by slice (all three axes)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if float(data.max()) <= float(data.min()):
        return np.zeros(data.shape, dtype=bool)
    fg = data > threshold_otsu(data)
    for ax in range(3):  # 2-D filling per slice: a 3-D fill would miss sulci open in one direction only
        fg = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(fg, ax, 0)], axis=0)
        fg = np.moveaxis(fg, 0, ax)
    return fg


@lru_cache(maxsize=4)
def _cached_volume(key: str, mtime_ns: int, frame: int | None, lo_pct: float, hi_pct: float) -> Volume:
    path = Path(key)
    data, zooms = _load_canonical(path, frame)
    fg = foreground_mask(data)
    if not fg.any():
        raise MedxganError(f"{path}: NIfTI volume is constant ({float(data.min())}): nothing to window")
    lo, hi = (float(v) for v in np.percentile(data[fg], [lo_pct, hi_pct]))
    if hi <= lo:
        raise MedxganError(f"{path}: the foreground of the NIfTI volume has a single intensity ({lo}); cannot window it")
    for a in (data, fg):
        a.setflags(write=False)
    return Volume(path, data, zooms, fg, (lo, hi))


def load_volume(path: str | os.PathLike, options: NiftiOptions | None = None) -> Volume:
    """Read (once; the last few volumes are cached) a NIfTI file as a canonical :class:`Volume`."""
    opts = (options or NiftiOptions()).checked()
    p = Path(path)
    if not p.is_file():
        raise MedxganError(f"{p}: file not found")
    return _cached_volume(str(p.resolve()), p.stat().st_mtime_ns, opts.frame, float(opts.window[0]), float(opts.window[1]))


# ----------------------------------------------------------------------------------------------
# slices


def _plane(a: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice as an image: rows from anterior/superior (top) down, columns along the first remaining axis."""
    p = np.take(a, index, axis=axis)  # axis 2: (X, Y); axis 1: (X, Z); axis 0: (Y, Z)
    return p.T[::-1, :]


def _spacing_rc(spacing: tuple[float, float, float], axis: int) -> tuple[float, float]:
    rest = [spacing[i] for i in range(3) if i != axis]
    return rest[1], rest[0]  # rows run along the second remaining axis, columns along the first


def square_pixels(img: np.ndarray, row_mm: float, col_mm: float, order: int = 1) -> np.ndarray:
    """Resample a 2-D slice so both pixel sides equal the finer spacing (pixel centres aligned)."""
    if row_mm == col_mm:
        return img
    from scipy import ndimage

    s = min(row_mm, col_mm)
    h, w = img.shape
    out_hw = (max(1, int(round(h * row_mm / s))), max(1, int(round(w * col_mm / s))))
    zoom = (out_hw[0] / h, out_hw[1] / w)
    out = ndimage.zoom(img.astype(np.float32) if order else img, zoom, order=order, grid_mode=True, mode="nearest")
    return out


def slice_indices(path: str | os.PathLike, options: NiftiOptions | None = None) -> list[int]:
    """Indices along ``options.axis`` whose foreground covers at least ``min_foreground`` of the slice."""
    opts = (options or NiftiOptions()).checked()
    vol = load_volume(path, opts)
    ax = AXES[opts.axis]
    other = tuple(i for i in range(3) if i != ax)
    frac = vol.foreground.mean(axis=other)
    return [int(i) for i in np.flatnonzero(frac >= float(opts.min_foreground))] if frac.max() > 0 else []


def expand_volume(path: str | os.PathLike, options: NiftiOptions | None = None) -> list[Path]:
    """The slice references of a volume (see :func:`slice_indices`); MedxganError when none has enough foreground."""
    opts = (options or NiftiOptions()).checked()
    idx = slice_indices(path, opts)
    if not idx:
        raise MedxganError(f"{path}: no {opts.axis} slice has at least {opts.min_foreground:.0%} foreground")
    return [slice_ref(path, opts.axis, i, opts.frame) for i in idx]


def read_slice(ref: str | os.PathLike, window: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """A slice reference -> ``float32`` ``H x W x 1`` in [0, 1] (windowed, square pixels)."""
    path, frame, letter, index = split_ref(ref)
    vol = load_volume(path, NiftiOptions(axis=letter, frame=frame, window=window))
    img = _slice_of(vol, letter, index, ref)
    lo, hi = vol.window
    img = ((img - lo) / (hi - lo)).clip(0.0, 1.0)
    return np.ascontiguousarray(square_pixels(img, *_spacing_rc(vol.spacing, AXES[letter]))[:, :, None].clip(0.0, 1.0),
                                dtype=np.float32)


def read_mask_slice(ref: str | os.PathLike, values: tuple[float, ...] | None = None) -> np.ndarray:
    """A slice reference of a mask / label volume -> bool ``H x W`` (value > 0, or one of ``values``), square pixels."""
    path, frame, letter, index = split_ref(ref)
    data, zooms = _mask_volume(str(Path(path).resolve()), Path(path).stat().st_mtime_ns if Path(path).is_file() else 0, frame)
    plane = _slice_of_array(data, letter, index, ref)
    m = np.isin(plane, np.asarray(values, dtype=plane.dtype)) if values else plane > 0
    return square_pixels(m, *_spacing_rc(zooms, AXES[letter]), order=0).astype(bool)


@lru_cache(maxsize=4)
def _mask_volume(key: str, mtime_ns: int, frame: int | None) -> tuple[np.ndarray, tuple[float, float, float]]:
    data, zooms = _load_canonical(Path(key), frame)
    data.setflags(write=False)
    return data, zooms


def _slice_of_array(data: np.ndarray, letter: str, index: int, ref) -> np.ndarray:
    ax = AXES[letter]
    if not 0 <= index < data.shape[ax]:
        raise MedxganError(f"{ref}: slice {letter}={index} out of range (the volume has {data.shape[ax]} slices along {letter})")
    return _plane(data, ax, index)


def _slice_of(vol: Volume, letter: str, index: int, ref) -> np.ndarray:
    return _slice_of_array(vol.data, letter, index, ref)


def slice_shape(ref: str | os.PathLike) -> tuple[int, int]:
    """Height and width of a slice after the square-pixel resampling (reads the volume, cached)."""
    path, frame, letter, index = split_ref(ref)
    vol = load_volume(path, NiftiOptions(axis=letter, frame=frame))
    ax = AXES[letter]
    _slice_of(vol, letter, index, ref)
    h, w = [vol.data.shape[i] for i in range(3) if i != ax][::-1]
    row_mm, col_mm = _spacing_rc(vol.spacing, ax)
    s = min(row_mm, col_mm)
    return (max(1, int(round(h * row_mm / s))), max(1, int(round(w * col_mm / s)))) if row_mm != col_mm else (h, w)


def volume_slices(path: str | os.PathLike, options: NiftiOptions | None = None) -> list[tuple[int, np.ndarray]]:
    """Every kept slice of a volume as ``(index, float32 H x W in [0, 1])`` (for the lesion builder)."""
    opts = (options or NiftiOptions()).checked()
    return [(split_ref(r)[3], read_slice(r, opts.window)[:, :, 0]) for r in expand_volume(path, opts)]


def nifti_options_from_meta(meta: dict, where: str) -> NiftiOptions:
    """``dataset.json`` ``{"nifti": {"axis": "z", "frame": 0, "min_foreground": 0.1}}`` (which slices a volume in
    a class folder yields; the window is the default 0.5 - 99.5 % one)."""
    raw = meta.get("nifti") if isinstance(meta, dict) else None
    if raw is None:
        return NiftiOptions()
    if not isinstance(raw, dict) or set(raw) - {"axis", "frame", "min_foreground"}:
        raise MedxganError(f"{where}: 'nifti' must be an object with keys axis, frame, min_foreground")
    try:
        return NiftiOptions(**raw).checked(f"{where} nifti")
    except (TypeError, ValueError):
        raise MedxganError(f"{where}: bad 'nifti' options {raw!r}") from None
