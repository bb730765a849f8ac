"""`medxgan translate train|apply|evaluate`: fundus <-> fluorescein-angiogram CycleGAN."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_device, add_speed_options


def register(subparsers: argparse._SubParsersAction, formatter_class: type) -> None:
    p = subparsers.add_parser(
        "translate", help="fundus photo <-> fluorescein angiogram translation (CycleGAN)", formatter_class=formatter_class,
        description="Fundus <-> fluorescein-angiography translation: unpaired CycleGAN (default) or, when registered "
                    "pairs exist, paired pix2pix-style training (--paired, recommended then).",
        epilog="examples:\n"
               "  medxgan synth fundus-angio --out data/fa\n"
               "  medxgan translate train data/fa --out runs/fa --size 128 --ngf 32\n"
               "  medxgan translate train data/fa-paired --out runs/fa-p --paired --size 128 --ngf 32   # registered pairs\n"
               "  medxgan translate apply photo.jpg photos/ --run runs/fa --direction fundus2angio --out fa_out/\n"
               "  medxgan translate evaluate data/fa --run runs/fa",
    )
    sub = p.add_subparsers(dest="translate_command", metavar="SUBCOMMAND")
    _add_train(sub, formatter_class)
    _add_apply(sub, formatter_class)
    _add_evaluate(sub, formatter_class)
    p.set_defaults(func=lambda args: p.print_help() or 0)


_WEIGHTS_HELP = ("which generator weights: last = the final step's (default), ema = their moving average, best = the epoch "
                 "with the best validation fundus->FA SSIM (runs trained with DATA/valA + valB)")


def _add_train(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    t = sub.add_parser(
        "train", help="train a CycleGAN on DATA/trainA (fundus) and DATA/trainB (angiograms)", formatter_class=formatter_class,
        description="Train G_fa (fundus -> FA), G_fundus (FA -> fundus), D_fa, D_fundus. Unpaired data: DATA/trainA "
                    "holds colour fundus photos, DATA/trainB angiograms; optional paired DATA/testA + DATA/testB feed "
                    "the per-epoch sample grids (RUN/samples/epoch_XXX.png). With registered pairs use --paired (the "
                    "recommended mode then): trainA/trainB hold the same subjects under the same file names (or --pairs "
                    "CSV), and both generators learn pix2pix-style (conditional PatchGAN + L1 weight 100, optionally "
                    "with the cycle terms, --paired-cycle). Learning rate: --epochs epochs constant, then "
                    "--epochs-decay epochs of linear decay to 0; the total is their sum (printed at start). A checkpoint "
                    "with the full training state is written atomically at every epoch end; --resume continues exactly.",
        epilog="examples:\n"
               "  medxgan translate train data/fa --out runs/fa                        # paper set-up: 256 px, 100+100 epochs\n"
               "  medxgan translate train data/fa --out runs/fa --size 128 --ngf 16 --crop 96 --epochs 10\n"
               "  medxgan translate train data/fa --out runs/fa --paired               # registered pairs, same names\n"
               "  medxgan translate train data/fa --out runs/fa --pairs pairs.csv      # pairs listed as fundus,angiogram rows\n"
               "  medxgan translate train data/fa --out runs/fa --resume               # after an interruption\n"
               "  medxgan translate train data/fa --out runs/fa --resume --epochs 150  # extend the constant phase\n"
               "  medxgan translate train data/fa --out runs/fa --batch-size 8 --amp bf16 --channels-last  # on a GPU\n"
               "  torchrun --nproc_per_node 4 -m medxgan translate train data/fa --out runs/fa --batch-size 4\n"
               "      # 4 GPUs (DistributedDataParallel); --batch-size is the global batch, a multiple of the process count",
    )
    t.add_argument("data", help="data root with trainA/ (fundus) and trainB/ (angiograms)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--size", type=int, default=argparse.SUPPRESS, help="images are resized to SIZE x SIZE (default 256; multiple of 4)")
    t.add_argument("--crop", type=int, default=argparse.SUPPRESS,
                   help="random crop size for training (default SIZE); smaller = cheaper, the nets are fully convolutional")
    t.add_argument("--epochs", type=int, default=argparse.SUPPRESS, help="epochs at constant learning rate (default 100)")
    t.add_argument("--epochs-decay", type=int, default=argparse.SUPPRESS, help="further epochs with linear decay to 0 (default: = --epochs)")
    t.add_argument("--ngf", type=int, default=argparse.SUPPRESS, help="generator base width (default 64)")
    t.add_argument("--ndf", type=int, default=argparse.SUPPRESS, help="discriminator base width (default 64)")
    t.add_argument("--blocks", type=int, default=argparse.SUPPRESS, help="residual blocks in each generator (default 6)")
    t.add_argument("--upsample", choices=["resize", "transpose"], default=argparse.SUPPRESS,
                   help="decoder upsampling: transpose = the paper's transposed conv (default; black surround, higher PSNR in the "
                        "benchmark), resize = nearest x2 + conv (no checkerboard artefacts; the default before 2026-12-02)")
    t.add_argument("--batch-size", type=int, default=argparse.SUPPRESS,
                   help="global batch size, default 1 (as in the paper); under torchrun a multiple of the number of processes")
    t.add_argument("--lr", type=float, default=argparse.SUPPRESS, help="Adam learning rate (default 2e-4)")
    t.add_argument("--lambda-cycle", type=float, default=argparse.SUPPRESS, help="cycle-consistency weight (default 10)")
    t.add_argument("--pool-size", type=int, default=argparse.SUPPRESS, help="fake-image history per discriminator (default 50 unpaired, 0 paired; 0 = none)")
    t.add_argument("--paired", action="store_true", default=argparse.SUPPRESS,
                   help="paired training (pix2pix-style): trainA/trainB matched by file name without extension; every image needs its partner")
    t.add_argument("--pairs", metavar="CSV", default=argparse.SUPPRESS,
                   help="paired training on the pairs of CSV (rows fundus,angiogram, optional header; paths relative to DATA); implies --paired")
    t.add_argument("--lambda-l1", type=float, default=argparse.SUPPRESS, help="paired: L1 weight (default 100, as in pix2pix)")
    t.add_argument("--paired-cycle", action="store_true", default=argparse.SUPPRESS,
                   help="paired: keep the cycle-consistency terms (weight --lambda-cycle) as well")
    t.add_argument("--rotations", action="store_true", default=argparse.SUPPRESS, help="add copies rotated by 90/180/270 degrees (4x data, as in the paper)")
    t.add_argument("--no-flip", dest="flip", action="store_false", default=argparse.SUPPRESS, help="no random horizontal flips")
    t.add_argument("--checkpoint-every", type=int, default=argparse.SUPPRESS, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch (default 0 = epoch ends only)")
    t.add_argument("--ema-decay", type=float, default=argparse.SUPPRESS,
                   help="decay of the moving average of the generators' weights kept as RUN/G_*_ema.safetensors (default 0.999, "
                        "with a warm-up; 0 = none)")
    t.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="default 0")
    add_speed_options(t, default=argparse.SUPPRESS)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time (checkpointed; continue with --resume)")
    add_device(t)
    t.set_defaults(func=_train)


def _add_apply(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    a = _run_reader_parser(
        sub, formatter_class, "apply", help="translate image files (any size) with one generator",
        description="Translate every image given (files and folders, searched recursively) at its native resolution. "
                    "fundus2angio needs colour (3-channel) fundus photos and writes 1-channel PNGs; angio2fundus "
                    "writes RGB PNGs. Sizes are padded by reflection to a multiple of 4 and cropped back.",
        examples=("medxgan translate apply photo.jpg --run runs/fa --direction fundus2angio --out fa_out/",
                  "medxgan translate apply scans/ --run runs/fa --direction angio2fundus --out colour/",
                  "medxgan translate apply big.tif --run runs/fa --direction fundus2angio --out out/ --tile 512"),
        inputs=("inputs", {"nargs": "+", "metavar": "INPUT", "help": "image files or folders"}),
    )
    a.add_argument("--direction", required=True, choices=["fundus2angio", "angio2fundus"])
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--size", type=int, help="resize inputs to SIZE x SIZE first (default: native resolution)")
    a.add_argument("--tile", type=int, help="translate in overlapping TILE x TILE tiles with feathered blending (large images)")
    a.set_defaults(func=_apply)


def _add_evaluate(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    e = _run_reader_parser(
        sub, formatter_class, "evaluate", help="SSIM / PSNR / MAE on paired test images, both directions, plus cycle error",
        description="Compare G_fa(testA) with testB and G_fundus(testB) with testA (paired by file name, resized to the "
                    "training size), and the cycle reconstructions; FID and KID with a local Inception-v3 file "
                    "(--inception-weights; skipped without one, nothing is downloaded) and always a domain KID in a fixed "
                    "random conv-net feature space (stated as not Inception). Writes results.json, results.md and side_by_side.png.",
        examples=("medxgan translate evaluate data/fa --run runs/fa",
                  "medxgan translate evaluate data/fa --run runs/fa --out eval/fa --weights best",
                  "medxgan translate evaluate data/fa --run runs/fa --inception-weights ~/models/inception-2015-12-05.pt"),
        inputs=("data", {"help": "data root with testA/ and testB/"}),
    )
    e.add_argument("--out", help="output folder (default RUN/eval)")
    e.add_argument("--inception-weights", metavar="FILE",
                   help="local Inception-v3 FID network for FID/KID: the TorchScript inception-2015-12-05.pt (StyleGAN2-ADA / "
                        "clean-fid), or pt_inception-2015-12-05-6726825d.pth (pytorch-fid / torch-fidelity; needs "
                        "pip install 'medxgan[fid]'); without it FID/KID are skipped")
    e.set_defaults(func=_evaluate)


def _run_reader_parser(sub: argparse._SubParsersAction, formatter_class: type, name: str, *, help: str, description: str,
                       examples: tuple[str, ...], inputs: tuple[str, dict]) -> argparse.ArgumentParser:
    """A subcommand that reads a trained run (apply, evaluate): its examples, its positional inputs and the run options."""
    parser = sub.add_parser(name, help=help, formatter_class=formatter_class, description=description,
                            epilog="examples:\n" + "\n".join("  " + line for line in examples))
    parser.add_argument(inputs[0], **inputs[1])
    _add_run_options(parser)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The trained run a command reads, which of its generator weights, and the device (apply, evaluate)."""
    p.add_argument("--run", required=True, help="cyclegan run directory")
    p.add_argument("--weights", choices=["last", "ema", "best"], default="last", help=_WEIGHTS_HELP)
    add_device(p)


def _train(args: argparse.Namespace) -> int:
    from medxgan.translate.train import train_cyclegan

    keys = ("size", "crop", "epochs", "epochs_decay", "ngf", "ndf", "blocks", "upsample", "batch_size", "lr",
            "lambda_cycle", "pool_size", "paired", "pairs", "lambda_l1", "paired_cycle", "rotations", "flip", "checkpoint_every", "seed", "amp",
            "channels_last", "compile", "ema_decay")
    train_cyclegan(args.data, args.out, resume=args.resume, device=args.device, max_minutes=args.max_minutes,
                   **{k: getattr(args, k, None) for k in keys})
    return 0


def _apply(args: argparse.Namespace) -> int:
    from medxgan.translate.apply import apply_translation
    from medxgan.translate.run import check_weights, weights_text

    written = apply_translation(args.inputs, args.run, args.direction, args.out, size=args.size, tile=args.tile, device=args.device,
                                weights=args.weights)
    print(f"[medxgan] wrote {len(written)} image(s) to {args.out} with the {weights_text(check_weights(args.run, args.weights), args.weights)} weights")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medxgan.translate.metrics import evaluate_translation, results_markdown
    from pathlib import Path

    res = evaluate_translation(args.data, args.run, args.out, inception_weights=args.inception_weights, device=args.device,
                               weights=args.weights)
    print(results_markdown(res), end="")
    print(f"[medxgan] results in {Path(args.out) if args.out else Path(args.run) / 'eval'}")
    return 0
