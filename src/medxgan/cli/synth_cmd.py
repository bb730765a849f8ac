"""`medxgan synth KIND --out DIR ...`: write a procedural phantom dataset with exact ground truth.

Each phantom kind is its own sub-subcommand (built from ``medxgan.data.phantoms.PHANTOM_KINDS``), so a kind
can add its own flags through ``PhantomKind.add_arguments``; their values reach the library as ``**extra``.
"""

from __future__ import annotations

import argparse

_COMMON = {"command", "func", "traceback", "kind", "out", "n", "size", "seed", "shortcut", "preview", "overwrite", "quiet"}

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
