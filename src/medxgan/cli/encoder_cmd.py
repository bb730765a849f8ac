"""`medxgan train-encoder`: train the inversion encoder of a GAN run (explain/evaluate then start from it)."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_class_mapping, add_device

EXAMPLES = """examples:
  medxgan train-encoder runs/gan                       # data: the set the GAN was trained on
  medxgan train-encoder runs/gan --steps 6000 --max-minutes 20
  medxgan train-encoder runs/gan --resume              # after an interruption

Writes RUN/encoder/ (config.json, encoder.safetensors, metrics.jsonl, checkpoints/). `medxgan explain`
and `medxgan evaluate` then start inversion from E(x) and run the short schedule (75 steps, 1 start)
unless --steps/--restarts are given; they say so when they start.
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    p = sub.add_parser(
        "train-encoder", help="train an encoder E(x) -> (z1, z2) that makes inversion ~10x faster",
        description="Train an encoder on generated images (known codes) and on real images through the frozen "
        "generator (reconstruction + classifier-probability match, the inversion loss), and store it in the GAN run. "
        "Inversion then starts from E(x) and needs far fewer optimisation steps.",
        epilog=EXAMPLES, formatter_class=formatter_class,
    )
    p.add_argument("gan", metavar="RUN", help="GAN run directory written by `medxgan train`")
    p.add_argument("--data", help="dataset root (default: the one the GAN was trained on)")
    p.add_argument("--steps", type=int, default=8000, help="Adam steps (half generated, half real images per batch)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="initial rate; cosine decay to lr/10 over the first invocation's --steps")
    p.add_argument("--width", type=int, default=32, help="encoder width (channels of the first layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue RUN/encoder from its latest checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and finish normally) after this much training time")
    p.add_argument("--eval-images", type=int, default=64, help="validation images for the logged metrics")
    add_class_mapping(p)
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medxgan.gan.encoder_train import EncoderTrainConfig, train_encoder
    from medxgan.gan.run import ENCODER_RUN_FIELDS, encoder_dir

    if args.resume:  # options left out: the run's own (a plain --resume continues the run as started)
        from medxgan.cli.common import take_run_settings

        take_run_settings(args, str(encoder_dir(args.gan)), {k: k for k in ("seed", "batch_size", "lr", "width", "steps")},
                          ENCODER_RUN_FIELDS)
    config = EncoderTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width, seed=args.seed,
                                log_every=args.log_every, ckpt_every=args.ckpt_every, max_minutes=args.max_minutes,
                                eval_images=args.eval_images, positive=args.positive, negative=args.negative, csv=args.csv,
                                skip_bad=args.skip_bad)
    res = train_encoder(args.gan, args.data, config, resume=args.resume, device=args.device, quiet=args.quiet)
    m = res["metrics"]
    print(f"final: psnr_encoder={m['psnr_encoder']:.2f} dB  psnr_after_{m['inversion_steps']}_steps={m['psnr_inversion']:.2f} dB  "
          f"prob_gap={m['prob_gap_inversion']:.3f}  (on {m['n_eval']} validation images)")
    print(f"encoder written to {res['out']}")
    return 0
