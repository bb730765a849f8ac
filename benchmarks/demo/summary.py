"""One markdown table of stored `medxgan demo` records: headline numbers read from each folder's files.

Usage:
    python benchmarks/demo/summary.py benchmarks/demo/brain-tv4-2026-12-06 benchmarks/demo/chest-tv4-2026-12-06
    python benchmarks/demo/summary.py benchmarks/demo/archive/*-2026-12-0*/   # the archive index's numbers

Each FOLDER holds what a demo run stores as its record: ``results.csv`` (``medxgan evaluate``'s cells: method,
metric, mean, lo, hi, n, n_invalid) and ``demo.json`` (settings, stage times, the machine). Nothing is recomputed:
the table only transcribes those two files (a folder without ``demo.json`` shows no wall time).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

MEDXGAN = ("medxgan-diff", "medxgan-lig", "medxgan-mask")  # never a baseline; the table shows diff and LIG
NOT_BASELINES = (*MEDXGAN, "twin")


def _cells(folder: Path) -> dict[tuple[str, str], tuple[float, float, float]]:
    with (folder / "results.csv").open(newline="") as f:
        return {(r["method"], r["metric"]): (float(r["mean"]), float(r["lo"]), float(r["hi"]))
                for r in csv.DictReader(f) if r["mean"]}  # an empty cell: no valid image for that metric (n = 0)


def _ci(cell: tuple[float, float, float] | None, digits: int = 3) -> str:
    if cell is None:
        return "-"
    mean, lo, hi = cell
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _mean(cell: tuple[float, float, float] | None, digits: int) -> str:
    return "-" if cell is None else f"{cell[0]:.{digits}f}"


def _row(folder: Path) -> str:
    cells = _cells(folder)
    iou = "localisation.iou_area_matched"
    baselines = sorted(((m, v) for (m, k), v in cells.items() if k == iou and m not in NOT_BASELINES), key=lambda mv: -mv[1][0])
    best = f"{baselines[0][0]} {_ci(baselines[0][1])}" if baselines else "-"
    pointing = " / ".join(_mean(cells.get((m, "localisation.pointing_game")), 2) for m in MEDXGAN)
    cf = "counterfactual_residual" if ("medxgan-diff", "counterfactual_residual.valid_oracle") in cells else "counterfactual"
    valid = " / ".join(_mean(cells.get(("medxgan-diff", f"{cf}.valid_{who}")), 3) for who in ("classifier", "oracle"))
    gain = cells.get(("medxgan-diff", f"twin_fidelity.{'residual' if cf.endswith('residual') else 'negative'}.psnr_gain"))
    kind, threads, wall = "-", "-", "-"
    if (folder / "demo.json").exists():
        record = json.loads((folder / "demo.json").read_text())
        kind = record["settings"].get("kind", "-")
        threads = str(record.get("machine", {}).get("torch_threads", "-"))
        wall = f"{record['total_s'] / 60:.1f}" if "total_s" in record else "-"
    date = m.group(0) if (m := re.search(r"\d{4}-\d\d-\d\d$", folder.name)) else "-"
    return (f"| `{folder.name}/` | {date} | {kind} | {threads} | {wall} | {_ci(cells.get(('medxgan-diff', iou)))} | "
            f"{_ci(cells.get(('medxgan-lig', iou)))} | {best} | {pointing} | {valid} | {_ci(gain, 2)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="demo record folders (each with results.csv, demo.json)")
    args = ap.parse_args(argv)
    missing = [str(f) for f in args.folders if not (f / "results.csv").is_file()]
    if missing:
        print(f"error: no results.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    print("| folder | date | kind | torch threads | wall (min) | difference IoU (area-matched) | LIG IoU | best baseline IoU | "
          "pointing (diff / LIG / mask) | valid clf / oracle | twin gain (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        print(_row(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
