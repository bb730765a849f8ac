"""`medxgan train-classifier`."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_class_mapping, add_device

EXAMPLES = """examples:
  medxgan synth brain-mri --out data/brain && medxgan train-classifier data/brain --out runs/clf
  medxgan train-classifier data/brain-tumor-mri --negative notumor --out runs/clf --size 64
  medxgan train-classifier data/chest --arch resnet-small --size 128 --epochs 30 --out runs/clf128
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    p = sub.add_parser("train-classifier", help="train a built-in binary classifier on a dataset",
                       description="Train a built-in binary classifier (model selection on validation AUC) and report test metrics.",
                       epilog=EXAMPLES, formatter_class=formatter_class)
    p.add_argument("data", help="dataset root in the class-folder layout (train/val/test splits optional)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--arch", default="paper-cnn", choices=["paper-cnn", "resnet-small"], help="architecture")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, help="input size in pixels (default 64 for paper-cnn, 128 for resnet-small)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="convert images to this many channels (default: as the data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="switch off flips/affine/intensity augmentation")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that exceeds this much training time (best epoch so far)")
    add_class_mapping(p)
    add_device(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medxgan.classifiers.training import ClassifierTrainConfig, format_test_report, train_classifier

    if args.resume:  # options left out: the run's own (a plain --resume continues the run as started)
        from medxgan.classifiers.records import CLASSIFIER_RUN_FIELDS
        from medxgan.cli.common import take_run_settings

        take_run_settings(args, args.out, {k: k for k in ("arch", "size", "channels", "seed", "batch_size", "lr", "epochs")}
                          | {"no_augment": "augment"}, CLASSIFIER_RUN_FIELDS)
    config = ClassifierTrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                   size=args.size, channels=args.channels, positive=args.positive, negative=args.negative,
                                   csv=args.csv, augment=not args.no_augment, skip_bad=args.skip_bad, max_minutes=args.max_minutes)
    result = train_classifier(args.data, args.out, config, device=args.device, resume=args.resume)
    print(format_test_report(result))
    print(f"classifier written to {args.out}")
    return 0
