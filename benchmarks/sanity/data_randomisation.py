"""Data-randomisation sanity check for the generator-based maps (Adebayo et al. 2018, issue 13).

Train a classifier on the real labels and one on *shuffled* training labels (same images, same class
counts), a medXGAN against each, then explain the same held-out predicted positives with both GANs'
difference maps and report: localisation of each (pointing game, area-matched IoU, pixel AUROC vs the
lesion masks) and the similarity (SSIM, Spearman of |A|) of the shuffled-label map to the real one.
A generator-based explanation that reflects what the classifier learned must lose its localisation and
its similarity to the real map when the classifier learned nothing.

    python benchmarks/sanity/data_randomisation.py --out OUT            # full (2-core CPU: ~15 min idle)
    python benchmarks/sanity/data_randomisation.py --out OUT --quick    # a few minutes, not a result

Writes OUT/results.json (settings, date, machine, command, timings, metrics with 95 % bootstrap CIs).
Unit-tested: tests/test_sanity_realism.py::test_shuffle_labels_keeps_counts_and_masks. Recorded result:
benchmarks/sanity/RESULTS.md (results.json next to it).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

MIRRORS = ("masks", "twins", "markers")  # trees that mirror the image tree and travel with an image


def shuffle_labels(src: Path, dst: Path, seed: int = 0, splits: tuple[str, ...] = ("train",)) -> dict[str, int]:
    """Copy the data set ``src`` to ``dst`` with the class folders of each split in ``splits`` randomly
    permuted over its images (class counts kept); mask/twin/marker files move with their image. Other
    splits unchanged. Returns the number of images and of changed labels over the shuffled splits."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    total = {"changed": 0, "n": 0}
    for split in splits:
        if (dst / split).is_dir():
            info = _shuffle_split(dst, split, rng)
            total = {k: total[k] + info[k] for k in total}
    return total


def _shuffle_split(dst: Path, split: str, rng: np.random.Generator) -> dict[str, int]:
    classes = sorted(p.name for p in (dst / split).iterdir() if p.is_dir())
    files = [(c, f.name) for c in classes for f in sorted((dst / split / c).iterdir()) if f.is_file()]
    labels = [c for c, _ in files]
    new = [labels[i] for i in rng.permutation(len(labels))]
    tmp = dst / f".{split}-shuffle"
    for (c, name), c_new in zip(files, new):
        for root in (dst,) + tuple(dst / m for m in MIRRORS):
            f = root / split / c / name
            if f.is_file():
                target = tmp / (root.name if root != dst else ".images") / c_new / name
                target.parent.mkdir(parents=True, exist_ok=True)
                f.rename(target)
    for root in (dst,) + tuple(dst / m for m in MIRRORS):
        moved = tmp / (root.name if root != dst else ".images")
        if moved.is_dir():
            for c_dir in moved.iterdir():
                for f in c_dir.iterdir():
                    (root / split / c_dir.name).mkdir(parents=True, exist_ok=True)
                    f.rename(root / split / c_dir.name / f.name)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"changed": int(sum(a != b for a, b in zip(labels, new))), "n": len(labels)}


def _run_config(run: Path) -> dict[str, Any]:
    """RUN/config.json, or {} when there is none (yet)."""
    try:
        return json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from medxgan.classifiers.training import train_classifier
    from medxgan.data.phantoms import synthesize
    from medxgan.evaluate.runner import evaluate
    from medxgan.evaluate.robustness import spearman, ssim
    from medxgan.evaluate.stats import aggregate
    from medxgan.gan.train import train_gan

    q = args.quick
    s = dict(n_images=400 if q else 2000, clf_epochs=3 if q else 12, gan_steps=100 if q else 1200, gan_minutes=2.0 if q else 14.0,
             oracle_epochs=2 if q else 10, eval_n=6 if q else 30, inversion={"steps": 50 if q else 200, "restarts": 1})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, timings = time.perf_counter(), {}
    data = out / "data"
    if not (data / "dataset.json").is_file():
        synthesize("brain-mri", data, n=s["n_images"], size=64, seed=args.seed, overwrite=True, show_progress=False)
    # train AND val labels shuffled: the classifier picks its best epoch on val, and real val labels would let
    # that selection find the epoch that happens to agree with the truth (measured: test AUC 0.68 that way)
    shuffled = shuffle_labels(data, out / "data-shuffled", seed=args.seed, splits=("train", "val"))
    evals, reused = {}, []
    for name, d in (("real", data), ("shuffled", out / "data-shuffled")):
        t = time.perf_counter()
        # a rerun into the same OUT reuses finished stages (same settings are the caller's responsibility)
        if _run_config(out / f"clf-{name}").get("status") != "finished":
            train_classifier(d, out / f"clf-{name}", arch="paper-cnn", epochs=s["clf_epochs"], seed=args.seed, size=64, device=args.device, quiet=True)
        if _run_config(out / f"gan-{name}").get("status") != "finished":
            train_gan(d, str(out / f"clf-{name}"), out / f"gan-{name}", preset="default", steps=s["gan_steps"], seed=args.seed,
                      oracle_epochs=s["oracle_epochs"], size=64, device=args.device, max_minutes=s["gan_minutes"], quiet=True)
        else:
            reused.append(name)
        # explain the REAL test split (real masks) with each GAN, the same images for both: the first test images
        # labelled positive (subset "pos"; a per-classifier subset such as "tp" would pick other images per GAN)
        evals[name] = evaluate(data, out / f"eval-{name}", gan=str(out / f"gan-{name}"), classifier=str(out / "clf-real") if name == "real" else None,
                               methods=["medxgan-diff"], n=s["eval_n"], subset="pos", noise_sigmas=(),
                               max_sensitivity=False, inversion=s["inversion"], device=args.device, show_progress=False)
        timings[name] = round(time.perf_counter() - t, 1)
    # per image both GANs explained: the similarity of the shuffled-label map to the real one, and each map's
    # localisation on ALL explained positives with masks (evaluate() scores only the images its classifier calls
    # positive, which for the shuffled-label classifier is almost none)
    from medxgan.data import load_image_tensor
    from medxgan.evaluate.localisation import iou_area_matched, pointing_game

    rows, scores = [], {"real": [], "shuffled": []}
    for r in evals["real"]["per_image"]:
        if r["method"] != "medxgan-diff":  # one row per image (the twin rows share the image)
            continue
        files = {n: out / f"eval-{n}" / "maps" / r["image_id"] / "medxgan-diff.npz" for n in scores}
        if not all(f.is_file() for f in files.values()):
            continue
        maps = {n: np.squeeze(np.load(f)["map"]) for n, f in files.items()}
        rows.append({"ssim": ssim(maps["real"], maps["shuffled"]), "spearman": spearman(maps["real"], maps["shuffled"])})
        mask_file = data / "masks" / r["image"]
        if mask_file.is_file():
            m = load_image_tensor(mask_file, size=maps["real"].shape[-1], channels=1)[0, 0].numpy() > 0
            if m.any():
                for n, a in maps.items():
                    scores[n].append({"pointing_game": pointing_game(np.abs(a), m), "iou_area_matched": iou_area_matched(np.abs(a), m)})
    loc_all = {n: aggregate(v) if v else {} for n, v in scores.items()}
    loc = lambda res: {k: v for k, v in res["methods"]["medxgan-diff"]["metrics"].items() if k.startswith(("localisation.", "counterfactual."))}  # noqa: E731
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "python": platform.python_version(), "command": " ".join([sys.executable] + sys.argv), "quick": q, "settings": s,
              "shuffled_labels": shuffled, "timings_s": timings, "reused_trained_stages": reused,
              "gan_steps_done": {n: _run_config(out / f"gan-{n}").get("steps_done") for n in ("real", "shuffled")}, "total_s": round(time.perf_counter() - t0, 1),
              "real": loc(evals["real"]), "shuffled": loc(evals["shuffled"]), "localisation_all_positives": loc_all,
              "similarity_shuffled_vs_real": aggregate(rows) if rows else {}, "n_compared": len(rows)}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: result[k] for k in ("total_s", "n_compared", "similarity_shuffled_vs_real")}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
