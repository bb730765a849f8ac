"""The evaluation folder's layout and its result store.

Layout (every file name of an evaluation folder is spelled here and only here; the runner, the pairs, the
realism review, the report and the demo build their paths with these names and helpers)::

    OUT/run.json  per_image.jsonl[.rank<r>]  results.json  results.csv  results.md  sanity.json  plots/
    OUT/maps/<image_id>/input.npz  OUT/maps/<image_id>/<method>.npz  OUT/frames/<image_id>.npz

The store: ``run.json`` (the settings a resumed evaluation must share), ``per_image.jsonl`` (one row per
finished (image, method), appended and flushed at once) and, under torchrun, one ``per_image.jsonl.rank<r>``
shard per rank, merged into the main file by rank 0."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from medxgan.runtime import distributed as dist
from medxgan.runtime.atomic import atomic_write_json, atomic_write_text
from medxgan.runtime.outdir import is_empty, mark, require_ours
from medxgan.runtime.errors import MedxganError

PER_IMAGE = "per_image.jsonl"
RUN_JSON = "run.json"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
SANITY_JSON = "sanity.json"
PLOTS_DIR = "plots"
MAPS_DIR = "maps"
FRAMES_DIR = "frames"  # the latent-slider frames of the report's rows (written by the demo), OUT/frames/<image_id>.npz
INPUT_MAPS = "input.npz"


def safe_method(name: str) -> str:
    """A method name as a file name (``<method>.npz``, the report's PNGs): unusual characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def image_maps_dir(out: str | os.PathLike, image_id: str) -> Path:
    """``OUT/maps/<image_id>/``: one image's saved input and maps."""
    return Path(out) / MAPS_DIR / image_id


def input_maps_file(out: str | os.PathLike, image_id: str) -> Path:
    """``OUT/maps/<image_id>/input.npz``: the image, its masks, label, probability, slice and path."""
    return image_maps_dir(out, image_id) / INPUT_MAPS


def method_maps_file(out: str | os.PathLike, image_id: str, method: str) -> Path:
    """``OUT/maps/<image_id>/<method>.npz``: one method's map and its image-shaped extras."""
    return image_maps_dir(out, image_id) / f"{safe_method(method)}.npz"


def frames_file(out: str | os.PathLike, image_id: str) -> Path:
    """``OUT/frames/<image_id>.npz``: the interpolation frames of one image (the report's latent slider)."""
    return Path(out) / FRAMES_DIR / f"{image_id}.npz"


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy/torch scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return clean_json(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_per_image(path: str | os.PathLike) -> tuple[dict[tuple[str, str], dict], bool]:
    """Rows of a ``per_image.jsonl`` keyed by (image_id, method); the last row of a pair wins.
    Returns (rows, clean) where clean is False when a broken (partial) line was skipped."""
    rows: dict[tuple[str, str], dict] = {}
    p = Path(path)
    if not p.exists():
        return rows, True
    text = p.read_text()
    clean = text == "" or text.endswith("\n")
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows[(r["image_id"], r["method"])] = r
        except (ValueError, KeyError, TypeError):
            clean = False
    return rows, clean


def _shard_files(out: Path) -> list[Path]:
    return sorted(out.glob(f"{PER_IMAGE}.rank*"))


def _merge_shards(out: Path, per_path: Path) -> None:
    """Append the rows of per-rank files (a sharded run) to the per-image file, then remove them."""
    shards = _shard_files(out)
    if not shards:
        return
    rows, _ = read_per_image(per_path) if per_path.exists() else ({}, True)
    for sp in shards:
        rows.update(read_per_image(sp)[0])
    atomic_write_text(per_path, "".join(json.dumps(clean_json(r)) + "\n" for r in rows.values()))
    for sp in shards:
        sp.unlink()



def read_run_settings(out: str | os.PathLike) -> Any:
    """The settings an evaluation folder's run.json recorded (None when it has none or it does not parse)."""
    run_json = Path(out) / RUN_JSON
    try:
        return json.loads(run_json.read_text()) if run_json.is_file() else None
    except (OSError, ValueError):
        return None


def _upgraded(old: Any, fixed: dict[str, Any], data_path: str | None) -> Any:
    """An older run.json (written before ``data_fingerprint``, naming the data by its resolved path) read with today's
    keys: at the same ``data_path`` it counts as recording today's fingerprint."""
    if not isinstance(old, dict) or "data_fingerprint" in old or "data" not in old:
        return old
    if data_path is not None and old["data"] == data_path and "data_fingerprint" in fixed:
        return {**{k: v for k, v in old.items() if k != "data"}, "data_fingerprint": fixed["data_fingerprint"]}
    return old


class ResultStore:
    """The per-image rows of one evaluation directory (resumable, shardable).

    ``open(fixed, overwrite)``: on rank 0, refuses a directory that holds an evaluation with other
    ``fixed`` settings (unless ``overwrite``, which clears it), writes ``run.json``, merges the shards of
    an interrupted sharded run and drops a partial last line; every rank then reads the finished pairs
    (``done``). ``writer()`` appends rows to this rank's file; ``merge()`` (rank 0) folds the shards in;
    ``rows()`` reads the main file.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.per_path = self.out / PER_IMAGE
        self.rank, self.world = dist.rank(), dist.world_size()
        self.done: dict[tuple[str, str], dict] = {}

    def open(self, fixed: dict[str, Any], overwrite: bool, data_path: str | None = None) -> "ResultStore":
        """``data_path``: the data's resolved path, for a folder written before ``data_fingerprint`` (its run.json names
        the data by path): such a folder resumes at the same path, and its run.json is upgraded."""
        if self.rank == 0 and is_empty(self.out):  # a folder this evaluation creates: medxgan's (runtime.outdir)
            mark(self.out, "evaluate")
        self.out.mkdir(parents=True, exist_ok=True)
        run_json = self.out / RUN_JSON
        if self.rank == 0:  # under torchrun only rank 0 touches the shared files; the others wait below
            if run_json.exists() and not overwrite:
                old = _upgraded(read_run_settings(self.out), fixed, data_path)
                if old is not None and old != fixed:
                    diff = sorted(k for k in set(old) | set(fixed) if old.get(k) != fixed.get(k))
                    raise MedxganError(f"{self.out}: holds an evaluation with other settings ({', '.join(diff)}); use another --out or --overwrite")
            if overwrite:
                require_ours(self.out, "out", "--overwrite", kind="evaluate")  # never clears a folder medxgan did not make
                for p in (self.per_path, self.out / RESULTS_JSON, *_shard_files(self.out)):
                    if p.exists():
                        p.unlink()
                if (self.out / MAPS_DIR).exists():
                    shutil.rmtree(self.out / MAPS_DIR)
            atomic_write_json(run_json, fixed)
            _merge_shards(self.out, self.per_path)  # rows of an interrupted sharded run count as done
            self.done, clean = read_per_image(self.per_path)
            if not clean:  # drop a partial last line before appending
                atomic_write_text(self.per_path, "".join(json.dumps(clean_json(r)) + "\n" for r in self.done.values()))
        dist.barrier()
        if self.rank != 0:  # the file as rank 0 left it
            self.done, _ = read_per_image(self.per_path)
        return self

    def is_done(self, image_id: str, method: str) -> bool:
        return (image_id, method) in self.done

    def writer(self) -> "_Writer":
        return _Writer(self, self.per_path if self.world == 1 else self.out / f"{PER_IMAGE}.rank{self.rank}")

    def merge(self) -> None:
        _merge_shards(self.out, self.per_path)

    def rows(self) -> dict[tuple[str, str], dict]:
        return read_per_image(self.per_path)[0]


class _Writer:
    def __init__(self, store: ResultStore, path: Path):
        self.store, self.path = store, path

    def __enter__(self) -> "_Writer":
        self.fh = open(self.path, "a")
        return self

    def write(self, rows: Iterable[dict]) -> None:
        for r in rows:
            r = clean_json(r)
            self.fh.write(json.dumps(r) + "\n")
            self.fh.flush()
            self.store.done[(r["image_id"], r["method"])] = r

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()
