"""Index building: which files make up a dataset, their 0/1 labels, splits and masks/boxes.

Two sources (see ``docs/CONTRACTS.md`` "On-disk data layout"):

* **Class folders** ``ROOT/[split/]<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff,dcm}`` (extensions
  case-insensitive, searched recursively inside a class folder, hidden files skipped).
  Split folders are recognised case-insensitively: ``train``/``training``, ``val``/``valid``/
  ``validation``, ``test``/``testing``. With split folders, ``split=None`` reads all of them.
  Without split folders (flat layout), ``split="train"|"val"|"test"`` selects a deterministic
  70/15/15 split by hashing the path relative to ROOT (:func:`hash_split`); ``split=None`` reads all.
* **CSV** ``path,label[,split][,x,y,w,h]`` (header optional; column aliases: file/filename/image,
  target/class, width/height). Several rows per image give several boxes; rows without box values
  give none. Paths are relative to ROOT (absolute paths and ``..`` escaping ROOT are errors); a path
  without extension is tried with each supported extension. Labels are 0/1 or class names mapped by
  ``positive``/``negative``. When given, the CSV defines the index. ``ROOT/boxes.csv`` is used
  automatically only when ROOT has no class folders. With box columns the boxes are the ground truth
  (the ``masks/`` tree is not used) and an image is ``has_mask`` when it has a box or label 0 (a
  negative's empty mask is known; a positive without box is not); without box columns masks come from
  the ``masks/`` tree as for class folders.

Class mapping (``positive``/``negative``: a name, a comma-separated string or a list):
explicit arguments, else ``ROOT/dataset.json`` ``{"positive": [...], "negative": [...]}``, else, with
exactly two classes, the one named like ``negative``/``normal``/``notumor``/``no_tumor``/``no``/
``healthy``/``0`` is negative. ``"*"`` or an omitted side means "every other class". Class folders in
neither list are ignored. Names are matched exactly, then case-insensitively.

Masks: ``ROOT/masks/<same relative path, any image extension>`` (same stem), checked at index time to
have the image's size. In a flat layout the folders ``masks`` and ``markers`` (phantom marker masks) are
not classes. An empty class folder is an error unless its class has images in another selected split.

NIfTI volumes (``.nii``/``.nii.gz``) in a class folder stand for their slices (``vol.nii.gz#z=42``, see
:mod:`medxgan.data.nifti`; ``dataset.json`` ``{"nifti": {"axis": ..., "frame": ..., "min_foreground": ...}}``
chooses them); the hash split of a flat layout hashes the volume, so all slices of one volume share a split. A
mask volume ``masks/<same relative path>.nii.gz`` gives the masks of its slices (voxels > 0).
"""

from __future__ import annotations

import csv as _csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medxgan.data.imageio import IMAGE_EXTENSIONS, ImageInfo, is_image_file, list_images, probe_image, probe_mask
from medxgan.data.nifti import NiftiOptions, is_nifti_name, is_slice_ref, nifti_options_from_meta, nifti_stem, split_ref
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.progress import progress
from medxgan.runtime.records import Field, check_record, obj, text

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
NEGATIVE_NAMES = ("negative", "normal", "notumor", "no_tumor", "no", "healthy", "0")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
PROGRESS_MIN = 500

_COLUMN_ALIASES = {
    "path": ("path", "file", "filename", "file_name", "image", "image_path", "image_id", "patientid"),
    "label": ("label", "target", "class", "class_name"),
    "split": ("split", "subset", "fold"),
    "x": ("x", "x0", "xmin"),
    "y": ("y", "y0", "ymin"),
    "w": ("w", "width"),
    "h": ("h", "height"),
}


@dataclass
class Sample:
    """One image of the index. ``boxes`` are ``(x, y, w, h)`` in original pixel coordinates."""

    path: Path
    rel: str
    label: int
    class_name: str
    split: str | None
    info: ImageInfo
    mask_path: Path | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    has_mask: bool = False
    twin_path: Path | None = None  # lesion-free twin (phantoms: ROOT/twins/<same relative path>)


@dataclass
class DatasetIndex:
    root: Path
    samples: list[Sample]
    positive: list[str]
    negative: list[str]
    skipped: list[tuple[str, str]]
    source: str  # "folders" or "csv"
    csv_path: Path | None = None
    split: str | None = None


def hash_split(rel: str) -> str:
    """Deterministic 70/15/15 train/val/test assignment from the posix path relative to ROOT (a NIfTI slice
    reference hashes its volume: neighbouring slices never land in different splits)."""
    if is_slice_ref(rel):
        rel = rel.split("#", 1)[0]
    u = int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "val"
    return "test"


def canonical_split(split, arg: str = "split") -> str | None:
    if split is None:
        return None
    s = SPLIT_ALIASES.get(str(split).strip().lower())
    if s is None:
        raise MedxganError(f"{arg}: unknown split {split!r}; expected one of train, val, test",
                           arg=arg if arg.isidentifier() else None)  # the option itself, not a CSV cell
    return s


# ----------------------------------------------------------------------------------------------
# class mapping


def _as_list(value, arg: str) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise MedxganError(f"{arg}: empty class list")
    return items


def read_dataset_json(root: Path) -> dict:
    p = root / "dataset.json"
    if not p.is_file():
        return {}
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MedxganError(f"{p}: not valid JSON ({e})") from None
    return check_record(meta, _DATASET_JSON_FIELDS, p)


# dataset.json's class mapping (runtime.records): a class name, a comma-separated string or a list of names
_CLASS_NAMES = Field(("str", "list"), null=True, item=text())
_DATASET_JSON_FIELDS = {"positive": _CLASS_NAMES, "negative": _CLASS_NAMES, "nifti": obj(null=True)}


def resolve_mapping(classes: list[str], positive=None, negative=None, *, where: str, defaults: dict | None = None,
                    kind: str = "class folder") -> tuple[list[str], list[str]]:
    """Return ``(positive_names, negative_names)`` among ``classes`` (see module docstring)."""
    pos_arg, neg_arg = "--positive", "--negative"
    pos, neg = _as_list(positive, pos_arg), _as_list(negative, neg_arg)
    if pos is None and neg is None and defaults and ("positive" in defaults or "negative" in defaults):
        pos_arg, neg_arg = "dataset.json 'positive'", "dataset.json 'negative'"
        pos, neg = _as_list(defaults.get("positive"), pos_arg), _as_list(defaults.get("negative"), neg_arg)
    if pos is None and neg is None:
        if len(classes) == 2:
            negs = [c for c in classes if c.lower() in NEGATIVE_NAMES]
            if len(negs) == 1:
                return [c for c in classes if c != negs[0]], negs
        raise MedxganError(
            f"{where}: cannot tell positive from negative among {kind}s {classes}; "
            "pass --positive/--negative (e.g. --negative notumor --positive '*')"
        )

    def match(names: list[str] | None, arg: str) -> list[str] | None:
        if names is None or names == ["*"]:
            return None
        if "*" in names:
            raise MedxganError(f"{arg}: '*' cannot be combined with class names ({names})")
        out = []
        for n in names:
            if n in classes:
                out.append(n)
                continue
            ci = [c for c in classes if c.lower() == n.lower()]
            if len(ci) != 1:
                raise MedxganError(f"{arg}: class {n!r} is not a {kind} under {where}; available: {', '.join(classes) or '(none)'}")
            out.append(ci[0])
        return list(dict.fromkeys(out))

    p, n = match(pos, pos_arg), match(neg, neg_arg)
    if p is None and n is None:
        raise MedxganError(f"{pos_arg}/{neg_arg}: at most one side may be '*' or omitted")
    if p is not None and n is not None and set(p) & set(n):
        raise MedxganError(f"{pos_arg}/{neg_arg}: classes listed as both positive and negative: {sorted(set(p) & set(n))}")
    if p is None:
        p = [c for c in classes if c not in n]
    if n is None:
        n = [c for c in classes if c not in p]
    if not p:
        raise MedxganError(f"{pos_arg}: no positive class left among {classes} (negative: {n})")
    if not n:
        raise MedxganError(f"{neg_arg}: no negative class left among {classes} (positive: {p})")
    return p, n


# ----------------------------------------------------------------------------------------------
# helpers shared by both sources


def _mask_table(root: Path, folder: str = "masks") -> dict[str, Path]:
    """``relative path without extension`` -> mask file, from ``ROOT/masks`` (or another mirror tree:
    ``ROOT/twins`` holds the phantoms' lesion-free twins)."""
    mroot = root / folder
    if not mroot.is_dir():
        return {}
    table: dict[str, Path] = {}
    for f in list_images(mroot, expand=False):  # a mask volume is keyed by its stem; its slices are found in _lookup
        table.setdefault(_key(f.relative_to(mroot).as_posix()), f)
    return table


def _key(rel: str) -> str:
    """The relative path without its image suffix (``a/b.png`` -> ``a/b``; ``a/v.nii.gz#z=3`` -> ``a/v#z=3``)."""
    return nifti_stem(rel) if is_nifti_name(rel) else PurePosixPath(rel).with_suffix("").as_posix()


def _lookup(table: dict[str, Path], rel: str) -> Path | None:
    """The mirror file of ``rel`` (mask or twin); for a NIfTI slice also the same slice of a mirror volume."""
    key = _key(rel)
    hit = table.get(key)
    if hit is None and is_slice_ref(rel):
        vol = table.get(key.split("#", 1)[0])
        if vol is not None and is_nifti_name(vol):
            hit = Path(f"{vol}#{rel.split('#', 1)[1]}")
    return hit


class _Checker:
    """Probes images (and masks), collecting or raising errors according to ``skip_bad``."""

    def __init__(self, skip_bad: bool, verify: bool):
        self.skip_bad, self.verify = skip_bad, verify
        self.skipped: list[tuple[str, str]] = []

    def fail(self, path: Path, err: MedxganError) -> None:
        if not self.skip_bad:
            raise err
        self.skipped.append((str(path), str(err)))

    def check(self, s: Sample) -> bool:
        try:
            s.info = probe_image(s.path, verify=self.verify)
        except MedxganError as e:
            self.fail(s.path, e)
            return False
        if s.mask_path is not None:
            try:
                mi = probe_mask(s.mask_path, verify=self.verify)
                if (mi.height, mi.width) != (s.info.height, s.info.width):
                    raise MedxganError(
                        f"{s.mask_path}: mask size {mi.height}x{mi.width} (HxW) differs from image {s.path} "
                        f"size {s.info.height}x{s.info.width}"
                    )
            except MedxganError as e:
                self.fail(s.path, e)
                return False
        return True


def _probe_all(samples: list[Sample], checker: _Checker, desc: str) -> list[Sample]:
    it = progress(samples, total=len(samples), desc=desc) if len(samples) > PROGRESS_MIN else samples
    return [s for s in it if checker.check(s)]


def _finish(root: Path, samples: list[Sample], split: str | None, where: str, pos: list[str], neg: list[str]) -> None:
    what = f"{where}" + (f" (split {split!r})" if split else "")
    if not samples:
        raise MedxganError(f"{what}: no readable images")
    labels = {s.label for s in samples}
    if len(labels) < 2:
        present = "positive" if 1 in labels else "negative"
        raise MedxganError(
            f"{what}: only one class present ({present}: {len(samples)} images); need both positive {pos} "
            f"and negative {neg} images"
        )


_NO_INFO = ImageInfo(0, 0, 0)


# ----------------------------------------------------------------------------------------------
# class-folder layout


def _list_class(cdir: Path, nifti: NiftiOptions, skip_bad: bool) -> list[Path]:
    """The images of a class folder, NIfTI volumes expanded to their slices (an unreadable volume raises, or with
    ``skip_bad`` is left out with a warning naming it)."""
    try:
        return list_images(cdir, nifti)
    except MedxganError:
        if not skip_bad:
            raise
    from medxgan.data.nifti import expand_volume

    out: list[Path] = []
    for f in list_images(cdir, expand=False):
        if not is_nifti_name(f):
            out.append(f)
            continue
        try:
            out.extend(expand_volume(f, nifti))
        except MedxganError as e:
            import warnings

            warnings.warn(f"skipped {e}", stacklevel=4)
    return out


def _split_dirs(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.lower() in SPLIT_ALIASES:
            out.setdefault(SPLIT_ALIASES[d.name.lower()], []).append(d)
    return out


def _class_dirs(base: Path, exclude_masks: bool) -> dict[str, Path]:
    return {
        d.name: d
        for d in sorted(base.iterdir())
        if d.is_dir() and not d.name.startswith(".") and not (exclude_masks and d.name in ("masks", "markers", "twins"))
    }


def index_folders(root: Path, split=None, positive=None, negative=None, skip_bad=False, verify=True) -> DatasetIndex:
    """Index ``ROOT/[split/]<class>/...`` (see module docstring)."""
    split = canonical_split(split)
    splits = _split_dirs(root)
    if splits:
        if split is not None and split not in splits:
            raise MedxganError(
                f"{root}: split {split!r} not found; split folders present: {', '.join(sorted(splits))}"
            )
        chosen = [(s, d) for s in SPLITS if split in (None, s) for d in splits.get(s, [])]
        all_bases = [d for s in SPLITS for d in splits.get(s, [])]
        bases = [(s, d, _class_dirs(d, False)) for s, d in chosen]
        classes = sorted({c for d in all_bases for c in _class_dirs(d, False)})
    else:
        bases = [(None, root, _class_dirs(root, True))]
        classes = sorted(bases[0][2])
    if not classes:
        loose = [f for f in root.iterdir() if f.is_file() and is_image_file(f)]
        hint = " (images must be inside class folders: ROOT/[split/]<class>/...)" if loose else ""
        raise MedxganError(f"{root}: no class folders found{hint}; expected ROOT/[train|val|test/]<class>/*.png|jpg|dcm|...")
    meta = read_dataset_json(root)
    pos, neg = resolve_mapping(classes, positive, negative, where=str(root), defaults=meta)
    nifti = nifti_options_from_meta(meta, str(root / "dataset.json"))
    masks, twins = _mask_table(root), _mask_table(root, "twins")
    samples: list[Sample] = []
    n_files: dict[str, int] = {}
    empty: dict[str, list[Path]] = {}
    for split_name, base, cdirs in bases:
        for cname, cdir in cdirs.items():
            if cname not in pos and cname not in neg:
                continue
            files = _list_class(cdir, nifti, skip_bad)
            n_files[cname] = n_files.get(cname, 0) + len(files)
            if not files:
                empty.setdefault(cname, []).append(cdir)
            for f in files:
                rel = f.relative_to(root).as_posix()
                sp = split_name if split_name is not None else hash_split(rel)
                if split is not None and sp != split:
                    continue
                mp = _lookup(masks, rel)
                samples.append(Sample(f, rel, int(cname in pos), cname, sp, _NO_INFO, mask_path=mp, has_mask=mp is not None,
                                      twin_path=_lookup(twins, rel)))
    for cname, dirs in empty.items():  # an empty folder is fine when its class has images in another split
        if n_files.get(cname, 0) == 0:
            raise MedxganError(f"{dirs[0]}: class folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    checker = _Checker(skip_bad, verify)
    samples = _probe_all(samples, checker, f"index {root.name}")
    _finish(root, samples, split, str(root), pos, neg)
    return DatasetIndex(root, samples, pos, neg, checker.skipped, "folders", None, split)


# ----------------------------------------------------------------------------------------------
# CSV


def _parse_label(text: str):
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        return t
    if v in (0.0, 1.0):
        return int(v)
    return t


def _inside_root(root: Path, raw: str) -> str | None:
    """Normalised posix relative path, or None when ``raw`` is absolute or escapes ROOT."""
    t = raw.strip().replace("\\", "/")
    if not t or t.startswith("/") or (len(t) > 1 and t[1] == ":") or Path(t).is_absolute():
        return None
    norm = os.path.normpath(t).replace("\\", "/")
    if norm == ".." or norm.startswith("../") or norm == ".":
        return None
    try:
        (root / norm).resolve().relative_to(root.resolve())
    except ValueError:  # a symlink pointing out of ROOT
        return None
    return norm


def _read_csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of the CSV with their 1-based row numbers."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(_csv.reader(fh))
    except (OSError, UnicodeDecodeError, _csv.Error) as e:
        raise MedxganError(f"{csv_path}: cannot read CSV ({e})") from None
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        raise MedxganError(f"{csv_path}: CSV is empty")
    return numbered


def _csv_columns(csv_path: Path, numbered: list[tuple[int, list[str]]]) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """({column key: index}, the data rows): from the header row when there is one, else by the number of columns."""
    head = [c.strip().lower() for c in numbered[0][1]]
    col: dict[str, int] = {}
    for key, names in _COLUMN_ALIASES.items():
        for j, h in enumerate(head):
            if h in names and key not in col:
                col[key] = j
    if "path" in col or "label" in col:  # a header row
        numbered = numbered[1:]
        for key in ("path", "label"):
            if key not in col:
                raise MedxganError(f"{csv_path}: missing column {key!r} (header: {','.join(head)})")
    else:  # positional
        n = len(head)
        layouts = {2: ["path", "label"], 3: ["path", "label", "split"], 6: ["path", "label", "x", "y", "w", "h"],
                   7: ["path", "label", "split", "x", "y", "w", "h"]}
        if n not in layouts:
            raise MedxganError(
                f"{csv_path}, row {numbered[0][0]}: no header and {n} columns; expected path,label[,split][,x,y,w,h]"
            )
        col = {k: j for j, k in enumerate(layouts[n])}
    box_cols = [k for k in ("x", "y", "w", "h") if k in col]
    if box_cols and len(box_cols) != 4:
        missing = [k for k in ("x", "y", "w", "h") if k not in col]
        raise MedxganError(f"{csv_path}: box columns need all of x,y,w,h; missing {missing}")
    return col, numbered


def _csv_box(where: str, cells: list[str], col: dict[str, int]) -> tuple[float, float, float, float] | None:
    vals = [cells[col[k]] for k in ("x", "y", "w", "h")]
    if not any(vals):
        return None
    try:
        box = tuple(float(v) for v in vals)
    except ValueError:
        raise MedxganError(f"{where}: bad box number in x,y,w,h = {vals}") from None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise MedxganError(f"{where}: bad box x,y,w,h = {vals} (need finite numbers, w and h > 0)")
    return box


def _csv_records(root: Path, csv_path: Path, numbered: list[tuple[int, list[str]]], col: dict[str, int]) -> dict[str, dict]:
    """One record per image path (rows of one image merged: its boxes, one label, one split), checked row by row."""
    ncols = max(col.values()) + 1
    records: dict[str, dict] = {}
    for rowno, r in numbered:
        where = f"{csv_path}, row {rowno}"
        cells = [c.strip() for c in r] + [""] * max(0, ncols - len(r))
        if len(r) <= max(col["path"], col["label"]):
            raise MedxganError(f"{where}: missing columns (expected {ncols}, got {len(r)})")
        raw_path = cells[col["path"]]
        if not raw_path:
            raise MedxganError(f"{where}: empty path")
        rel = _inside_root(root, raw_path)
        if rel is None:
            raise MedxganError(f"{where}: path {raw_path!r} is outside the data root {root}")
        if not cells[col["label"]]:
            raise MedxganError(f"{where}: empty label")
        label = _parse_label(cells[col["label"]])
        sp = None
        if "split" in col and cells[col["split"]]:
            sp = canonical_split(cells[col["split"]], arg=f"{where}: split")
        box = _csv_box(where, cells, col) if "x" in col else None
        rec = records.get(rel)
        if rec is None:
            rec = records[rel] = {"row": rowno, "label": label, "split": sp, "boxes": []}
        else:
            if rec["label"] != label:
                raise MedxganError(f"{where}: label {label!r} for {rel} conflicts with {rec['label']!r} in row {rec['row']}")
            if sp is not None and rec["split"] not in (None, sp):
                raise MedxganError(f"{where}: split {sp!r} for {rel} conflicts with {rec['split']!r} in row {rec['row']}")
            rec["split"] = rec["split"] or sp
        if box is not None:
            rec["boxes"].append(box)
    return records


def _csv_file(root: Path, rel: str) -> tuple[Path, str]:
    """The file a CSV path names: itself, a slice of a volume, or (no extension given) the first image extension that exists."""
    f = root / rel
    if is_slice_ref(rel) and split_ref(f)[0].is_file():
        pass  # one slice of a volume: the reference itself is the sample
    elif not f.is_file() and not PurePosixPath(rel).suffix:
        for ext in IMAGE_EXTENSIONS:
            for cand in (root / (rel + ext), root / (rel + ext.upper())):
                if cand.is_file():
                    f, rel = cand, rel + cand.suffix
                    break
            if f.is_file():
                break
    return f, rel


def index_csv(root: Path, csv_path: Path, split=None, positive=None, negative=None, skip_bad=False, verify=True) -> DatasetIndex:
    """Index the images listed in ``csv_path`` (see module docstring)."""
    split = canonical_split(split)
    col, numbered = _csv_columns(csv_path, _read_csv_rows(csv_path))
    box_cols = "x" in col  # all four box columns or none (checked above)
    records = _csv_records(root, csv_path, numbered, col)

    names = sorted({rec["label"] for rec in records.values() if isinstance(rec["label"], str)})
    pos: list[str] = ["1"]
    neg: list[str] = ["0"]
    if names:
        pos, neg = resolve_mapping(names, positive, negative, where=f"{csv_path} labels",
                                   defaults=read_dataset_json(root), kind="label")
        pos, neg = pos + ["1"], neg + ["0"]

    masks = {} if box_cols else _mask_table(root)  # boxes, when the CSV has them, are the ground truth
    twins = _mask_table(root, "twins")
    checker = _Checker(skip_bad, verify)
    samples: list[Sample] = []
    for rel, rec in records.items():
        lab = rec["label"]
        if isinstance(lab, str) and lab not in pos and lab not in neg:
            continue  # a class in neither list: ignored, like an unlisted class folder
        y = lab if isinstance(lab, int) else int(lab in pos)
        sp = rec["split"] or hash_split(rel)
        if split is not None and sp != split:
            continue
        f, rel = _csv_file(root, rel)
        if not f.is_file() and not (is_slice_ref(rel) and split_ref(f)[0].is_file()):
            checker.fail(f, MedxganError(f"{csv_path}, row {rec['row']}: {rel}: file not found under {root}"))
            continue
        mp = _lookup(masks, rel)
        has = bool(rec["boxes"]) or mp is not None or (box_cols and y == 0)
        samples.append(Sample(f, rel, y, str(lab), sp, _NO_INFO, mask_path=mp, boxes=list(rec["boxes"]), has_mask=has,
                              twin_path=_lookup(twins, rel)))
    samples = _probe_all(samples, checker, f"index {csv_path.name}")
    _finish(root, samples, split, str(csv_path), pos, neg)
    return DatasetIndex(root, samples, pos, neg, checker.skipped, "csv", csv_path, split)


# ----------------------------------------------------------------------------------------------


def build_index(root, split=None, positive=None, negative=None, csv=None, skip_bad=False, verify=True) -> DatasetIndex:
    """Index a dataset root: a CSV when given (or ``ROOT/boxes.csv`` with no class folders), else class folders."""
    root = Path(root)
    if not root.exists():
        raise MedxganError(f"{root}: data folder not found")
    if not root.is_dir():
        raise MedxganError(f"{root}: not a folder (expected a dataset root with class folders)")
    csv_path = None
    if csv is not None:
        c = Path(csv)
        if c.is_file():
            csv_path = c
        elif not c.is_absolute() and (root / c).is_file():
            csv_path = root / c
        else:
            raise MedxganError(f"{csv}: CSV file not found (also looked in {root})")
    elif (root / "boxes.csv").is_file() and not _split_dirs(root) and not _class_dirs(root, True):
        csv_path = root / "boxes.csv"
    if csv_path is not None:
        return index_csv(root, csv_path, split, positive, negative, skip_bad, verify)
    return index_folders(root, split, positive, negative, skip_bad, verify)
