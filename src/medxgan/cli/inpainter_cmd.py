"""`medxgan train-inpainter`: train the learned in-fill of the minimal mask (explain/evaluate --infill learned|learned-gan)."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_class_mapping

EXAMPLES = """examples:
  medxgan train-inpainter data/brain --out runs/inpainter                 # context only: --infill learned
  medxgan train-inpainter data/brain --gan runs/gan --out runs/inp-gan    # + the GAN's anatomy: --infill learned-gan
  medxgan evaluate data/brain --gan runs/gan --infill learned --inpainter runs/inpainter --out eval-learned/
  medxgan train-inpainter data/brain --out runs/inpainter --resume        # after an interruption

Learns from the negative scans of DATA's train split (the classifier's healthy training scans), with random holes
(blobs, ellipses, strokes). Writes RUN/ (config.json, inpainter.safetensors, metrics.jsonl, checkpoints/).
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    p = sub.add_parser(
        "train-inpainter", help="train a small U-Net that fills a region of a scan from the scan around it (--infill learned)",
        description="Train the learned in-fill of medXGAN's minimal mask: a small U-Net that fills random holes in healthy "
        "scans from their context; with --gan it also sees the GAN's anatomy of the scan (--infill learned-gan).",
        epilog=EXAMPLES, formatter_class=formatter_class,
    )
    p.add_argument("data", help="dataset root (its train split's negatives are the training scans; val negatives are held out)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--gan", metavar="RUN", help="a `medxgan train` run: train the context+gan variant (for --infill learned-gan) at "
                   "its size and channels")
    p.add_argument("--size", type=int, help="scan size in pixels (default: the GAN's with --gan, else 64); must match the GAN used later")
    p.add_argument("--channels", type=int, choices=[1, 3], help="channels (default: the GAN's with --gan, else 1)")
    p.add_argument("--steps", type=int, default=1000, help="Adam steps")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-3, help="initial rate; cosine decay to lr/10 over the first invocation's --steps")
    p.add_argument("--width", type=int, default=12, help="network width (channels of its first stage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and finish normally) after this much training time")
    add_class_mapping(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medxgan.gan.inpainter_train import InpainterConfig, train_inpainter

    if args.resume:  # options left out: the run's own (a plain --resume continues the run as started)
        from medxgan.cli.common import take_run_settings

        take_run_settings(args, args.out, {k: k for k in ("seed", "batch_size", "lr", "width", "steps", "size", "channels")})
    mapping = {k: v for k, v in dict(positive=args.positive, negative=args.negative, csv=args.csv, skip_bad=args.skip_bad).items() if v}
    config = InpainterConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width, seed=args.seed, size=args.size,
                             channels=args.channels, log_every=args.log_every, ckpt_every=args.ckpt_every)
    res = train_inpainter(args.data, args.out, config, gan=args.gan, resume=args.resume, max_minutes=args.max_minutes, mapping=mapping,
                          quiet=args.quiet)
    m = res["metrics"]
    print(f"final: held-out L1 inside the holes {m['val_l1_hole']:.4f} (the mean healthy scan's: {m['val_l1_hole_mean_fill']:.4f})")
    print(f"inpainter written to {res['out']}")
    return 0
