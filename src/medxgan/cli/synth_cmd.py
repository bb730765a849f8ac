"""`medxgan synth KIND --out DIR ...`: write a procedural phantom dataset with exact ground truth.

Each phantom kind is its own sub-subcommand (built from ``medxgan.data.phantoms.PHANTOM_KINDS``), so a kind
can add its own flags through ``PhantomKind.add_arguments``; their values reach the library as ``**extra``.
"""

from __future__ import annotations

import argparse

_COMMON = {"command", "func", "traceback", "given_options", "kind", "out", "n", "size", "seed", "shortcut", "preview", "overwrite", "quiet"}

_EPILOG = """\
examples:
  medxgan synth brain-mri --out data/brain                      # 2000 images, 64 px, seed 0
  medxgan synth chest-xray --out data/chest --size 128 --preview
  medxgan synth brain-mri --out data/brain-sc --shortcut 0.8    # corner tag on 80% of positives

layout written (see docs/CONTRACTS.md):
  DIR/{train,val,test}/{negative,positive}/*.png     8-bit grayscale images (70/15/15 split)
  DIR/masks/<split>/<class>/<name>.png              lesion masks 0/255 (empty for negatives)
  DIR/markers/<split>/<class>/<name>.png            shortcut-marker masks 0/255 (empty when absent)
  DIR/dataset.json                                  kind, class mapping, n, size, seed, shortcut, counts
  DIR/boxes.csv                                     chest-xray only: path,label,split,x,y,w,h
  DIR/preview.png                                   with --preview: a grid, lesion outlines in red
"""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    p.add_argument("--n", type=_int, default=2000, help="number of images (about half positive)")
    p.add_argument("--size", type=_int, default=64, help="image side in pixels (>= 32)")
    p.add_argument("--seed", type=_int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--shortcut", type=float, default=0.0, metavar="P",
                   help="probability of a corner marker on positives (negatives: 0.05*P)")
    p.add_argument("--preview", action="store_true", help="also save DIR/preview.png (4x8 grid)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers, formatter_class) -> None:
    from medxgan.data.phantoms import PHANTOM_KINDS

    parser = subparsers.add_parser(
        "synth",
        help="write a phantom dataset (brain MRI, chest X-ray, ...) with exact lesion masks",
        description="Write a procedural phantom dataset with exact ground truth (lesion masks, boxes,\n"
        "shortcut-marker masks) in the layout the other commands read. Run `medxgan synth KIND --help`\n"
        "for the options of one kind.",
        epilog=_EPILOG,
        formatter_class=formatter_class,
    )
    kind_parsers = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, spec in PHANTOM_KINDS.items():
        p = kind_parsers.add_parser(
            name,
            help=spec.help,
            description=spec.help,
            epilog=spec.epilog or _EPILOG,
            formatter_class=formatter_class,
        )
        _add_common(p)
        if spec.add_arguments is not None:
            spec.add_arguments(p.add_argument_group(f"{name} options"))
        p.set_defaults(func=_run)
    _register_lesions(kind_parsers, formatter_class)


_LESIONS_EPILOG = """\
examples:
  medxgan synth lesions healthy/*.nii.gz --out data/real                  # one subject per volume: split by subject
  medxgan synth lesions /usr/share/mricron/templates/ch2bet.nii.gz --out data/colin --preview   # one brain: split by slab
  medxgan synth lesions ch2.nii.gz --region aal.nii.gz --region-labels 2001,2002 --out data/roi  # lesions only there
  medxgan synth lesions icbm.nii.gz --split test --out data/other-brain  # every image a test image (another scanner/brain)
  medxgan synth lesions scans/subject01 scans/subject02 scans/subject03 --out data/xr   # folders of 2-D images

Every source slice becomes a negative or a positive, never both; a positive's lesion-free twin (the same augmented
scan) is in DIR/twins and its mask (exactly where the image changed) in DIR/masks, so `medxgan evaluate` scores
the counterfactual against the truth. DIR/sources.csv says which subject and slice each image comes from.
"""


def _register_lesions(kind_parsers, formatter_class) -> None:
    from medxgan.data.lesions import LESION_MODELS

    p = kind_parsers.add_parser(
        "lesions", help="insert lesions with exact masks and lesion-free twins into your own healthy scans",
        description="Turn healthy scans (NIfTI volumes, folders of 2-D images, or single images) into a data set with exact "
        "ground truth: lesions of several kinds (hyper-/hypo-intense, texture-preserving, ring-enhancing, mass effect, subtle) "
        "inserted into half of the source slices, split by subject (3+ sources) or by slab so no anatomy leaks between "
        "train/val/test, augmented identically for a positive and its twin.",
        epilog=_LESIONS_EPILOG, formatter_class=formatter_class)
    p.add_argument("sources", nargs="+", metavar="SRC", help="healthy scans: .nii/.nii.gz volumes, folders of 2-D images, images")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    p.add_argument("--n", type=_int, default=2000, help="number of images (about half positive)")
    p.add_argument("--size", type=_int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=_int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--region", action="append", metavar="MASK", help="NIfTI mask or label volume in the scan's space where "
                   "lesions may go (once for all sources, or once per source; default: the scan's foreground)")
    p.add_argument("--region-labels", metavar="V,V,...", help="label values of --region that count (default: every value > 0)")
    p.add_argument("--axis", default="z", choices=("x", "y", "z", "sagittal", "coronal", "axial"), help="slicing axis of volumes")
    p.add_argument("--frame", type=_int, default=None, metavar="T", help="4-D volumes: the frame to use")
    p.add_argument("--min-foreground", type=float, default=0.1, metavar="F", help="skip slices whose foreground covers less "
                   "than this fraction")
    p.add_argument("--slab", type=_int, default=10, help="slices per slab when splitting one or two subjects by slab")
    p.add_argument("--gap", type=_int, default=2, help="slices dropped where slabs of different splits meet")
    p.add_argument("--split", metavar="SPLIT", help="put every image in this split (train, val or test) instead of splitting")
    p.add_argument("--models", default=",".join(LESION_MODELS), metavar="M,M,...", help=f"lesion models ({', '.join(LESION_MODELS)})")
    p.add_argument("--preview", action="store_true", help="also save DIR/preview.png (4x8 grid, masks outlined)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out made by medxgan synth")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_lesions)


def _run_lesions(args: argparse.Namespace) -> int:
    import math

    from medxgan.data.lesion_dataset import LesionDatasetConfig, synthesize_lesions
    from medxgan.data.lesions import LesionConfig
    from medxgan.runtime.errors import MedxganError

    labels = None
    if args.region_labels:
        try:
            labels = [float(v) for v in args.region_labels.split(",") if v.strip()]
        except ValueError:
            raise MedxganError(f"--region-labels {args.region_labels!r}: expected numbers separated by commas") from None
        if not labels or not all(math.isfinite(v) for v in labels):
            raise MedxganError(f"--region-labels {args.region_labels!r}: expected finite numbers separated by commas")
        if not args.region:
            raise MedxganError("--region-labels: needs --region (the label volume)")
    if not math.isfinite(args.min_foreground):
        raise MedxganError(f"--min-foreground {args.min_foreground}: must be a finite fraction")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    cfg = LesionDatasetConfig(n=args.n, size=args.size, seed=args.seed, axis=args.axis, frame=args.frame, min_foreground=args.min_foreground,
                              slab=args.slab, gap=args.gap, split=args.split, lesions=LesionConfig(models=models))
    s = synthesize_lesions(args.sources, args.out, cfg, regions=args.region, region_labels=labels, preview=args.preview,
                           overwrite=args.overwrite, show_progress=not args.quiet)
    parts = ", ".join(f"{sp} {c['negative']}-/{c['positive']}+" for sp, c in s["counts"].items())
    preview = f" (preview: {s['preview']})" if s.get("preview") else ""
    print(f"synth lesions: {s['n']} images {s['size']}px from {s['n_sources']} source slices, split by {s['split_by']} ({parts}) "
          f"in {s['seconds']:.1f} s -> {s['out']}{preview}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from medxgan.data.phantoms import synthesize

    extra = {k: v for k, v in vars(args).items() if k not in _COMMON}
    summary = synthesize(
        args.kind, args.out, n=args.n, size=args.size, seed=args.seed, shortcut=args.shortcut,
        preview=args.preview, overwrite=args.overwrite, show_progress=not args.quiet, **extra,
    )
    counts = summary["counts"]
    parts = ", ".join(f"{s} {c['negative']}-/{c['positive']}+" for s, c in counts.items())
    n_markers = sum(sum(c.values()) for c in summary["markers"].values())
    marker_txt = f", {n_markers} markers" if summary["shortcut"] > 0 else ""
    preview = f" (preview: {summary['preview']})" if summary.get("preview") else ""
    print(
        f"synth {summary['kind']}: {summary['n']} images {summary['size']}px ({parts}{marker_txt}) "
        f"in {summary['seconds']:.1f} s -> {summary['out']}{preview}"
    )
    return 0
