"""The README's image strip of real slices: for each data set written by `medxgan synth lesions`, a row of test
positives (exact lesion masks outlined in red) and a row of their lesion-free twins.

    python benchmarks/real_anatomy/strip.py OUT.png DATA [DATA ...]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from medxgan.data.phantoms.common import preview_grid


def rows_of(data: Path, k: int = 8) -> tuple[list, list, list, list]:
    rows = [r for r in csv.DictReader(open(data / "sources.csv")) if r["split"] == "test" and r["class"] == "positive"]
    first, seen = [], set()
    for r in rows:  # one image per source slice, evenly spaced over the slices: the strip shows different anatomy
        if r["slice"] not in seen:
            seen.add(r["slice"])
            first.append(r)
    first.sort(key=lambda r: int(r["slice"]))
    picked = [first[int(i)] for i in np.linspace(0, len(first) - 1, min(k, len(first)))]
    picked = (picked + [r for r in rows if r not in picked])[:k]
    load = lambda p: np.asarray(Image.open(p), dtype=np.float32) / 255.0  # noqa: E731
    imgs = [load(data / r["path"]) for r in picked] + [load(data / "twins" / r["path"]) for r in picked]
    masks = [np.asarray(Image.open(data / "masks" / r["path"])) > 0 for r in picked]
    masks = masks + [np.zeros_like(m) for m in masks]
    return imgs, masks, [np.zeros_like(m) for m in masks], [1] * len(picked) + [0] * len(picked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("datas", type=Path, nargs="+", metavar="DATA", help="data sets written by `medxgan synth lesions`")
    args = ap.parse_args()
    out, datas = args.out, args.datas
    parts = [rows_of(d) for d in datas]
    grid = preview_grid(*[sum((p[i] for p in parts), []) for i in range(4)], cols=8, cell=128)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(f"{out}: {grid.size[0]}x{grid.size[1]} px from {', '.join(map(str, datas))}")


if __name__ == "__main__":
    main()
