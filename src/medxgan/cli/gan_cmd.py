"""`medxgan train`: train the medXGAN generator against a frozen classifier."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medxgan.cli.common import add_class_mapping, add_classifier_spec, add_device, add_speed_options

EXAMPLES = """examples:
  medxgan synth brain-mri --out data/brain && medxgan train-classifier data/brain --out runs/clf
  medxgan train data/brain --classifier runs/clf --out runs/gan
  medxgan train data/brain --classifier runs/clf --out runs/gan --steps 20000 --ckpt-every 1000
  medxgan train data/brain --classifier runs/clf --out runs/gan --resume          # after an interruption
  medxgan train data/brain --classifier runs/clf --out runs/gan64 --preset paper-64   # the published recipe
  medxgan train data/chest --classifier runs/clf128 --out runs/gan128 --preset paper-128 --size 128
  medxgan train data/brain --classifier runs/clf --out runs/gan --batch-size 256 --amp bf16 --channels-last  # GPU
  torchrun --nproc_per_node 4 -m medxgan train data/brain --classifier runs/clf --out runs/gan --batch-size 128
      # 4 GPUs (DistributedDataParallel); --batch-size is the global batch; --resume works with any count
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m medxgan train ...

presets: default (fast nets + class-conditional projection D + R1 + DiffAugment + EMA; best on phantoms),
anchored (default's nets + an encoder anchor: reconstruction/KL/counterfactual of real positives),
fast (cheap nets, paper recipe), paper-64 / paper-128 (the published networks and recipe).
Watch disent (authors' check), oracle_neg/oracle_pos (an independent classifier agrees) and
diversity (1.0 = as diverse as the real negatives) in RUN/metrics.jsonl and RUN/samples/.
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    p = sub.add_parser(
        "train",
        help="train the medXGAN generator against a frozen classifier",
        description="Train a medXGAN generator G(z1, z2) (z1 anatomy, z2 what the classifier sees as pathology) "
        "against a frozen binary classifier. Writes RUN/config.json, generator.safetensors (EMA weights when EMA "
        "is on), discriminator.safetensors, metrics.jsonl, samples/, checkpoints/, and copies of the classifier "
        "(RUN/classifier/) and of the oracle (RUN/oracle/).",
        epilog=EXAMPLES,
        formatter_class=formatter_class,
    )
    p.add_argument("data", help="dataset root (its train split is used)")
    add_classifier_spec(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", default="default", help="network/recipe preset: default, joint, anchored, fast, paper-64, paper-128")
    p.add_argument("--steps", type=int, default=5000, help="training steps (one D and one G update each)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (under torchrun: split evenly over the processes)")
    p.add_argument("--lambda-cls", type=float, default=None, help="classifier-loss weight (default: the preset's; 2 at 64 px, 1 at 128 px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="resize the images to this size (default: keep the data's size)")
    p.add_argument("--log-every", type=int, default=250, help="log losses and monitor metrics every N steps")
    p.add_argument("--sample-every", type=int, default=None, help="write a sample grid every N steps (default: --log-every)")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and finish normally) after this much training time")
    p.add_argument("--choose-infill", action=argparse.BooleanOptionalAction, default=True,
                   help="at the end, choose the preset's in-fill 'auto' on DATA's validation scans and keep it in RUN, so the run "
                        "explains the same way where DATA is not (minutes on a CPU, once; --no-choose-infill: the first "
                        "explanation chooses)")
    p.add_argument("--monitor-samples", type=int, default=256, help="fixed z1 used for the monitor metrics")
    p.add_argument("--oracle", metavar="CLF", default=None,
                   help="independent classifier run dir for the oracle metrics (default: train one into RUN/oracle)")
    p.add_argument("--oracle-epochs", type=int, default=10, help="epochs for the oracle trained when --oracle is not given")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (no oracle agreement metrics)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset option, e.g. --set ema_decay=0.999 --set d_projection=true (experiments)")
    g = p.add_argument_group("GPU speed options (not covered by 'same seed -> same numbers'; on --resume: the run's setting unless given)")
    add_speed_options(g)
    add_class_mapping(p)
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run, precheck=_check_oracle)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    from medxgan.runtime.errors import MedxganError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MedxganError(f"--set {item}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _check_oracle(args: argparse.Namespace) -> None:
    """A given --oracle is loaded once before --out is created (cli.main's precheck): a file that is no
    classifier is refused in one line naming --oracle, with nothing written."""
    from medxgan.classifiers import load_classifier
    from medxgan.runtime.errors import MedxganError

    if args.no_oracle or not args.oracle:
        return
    spec = str(args.oracle)
    try:
        load_classifier(spec)
    except MedxganError as exc:
        msg = str(exc)
        for prefix in (f"classifier {spec}", spec):  # the loader names the file (or "classifier SPEC"): say --oracle
            if msg.startswith(prefix + ":"):
                msg = msg[len(prefix) + 1:].strip()
                break
        raise MedxganError(f"oracle {spec}: {msg}", arg="oracle") from None


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medxgan.cli.common import classifier_from_args
    from medxgan.gan.train import GanTrainConfig, train_gan
    from medxgan.runtime.device import pick_device
    from medxgan.runtime.distributed import context_from_env

    from medxgan.cli.common import check_classifier_flags

    check_classifier_flags(args)
    device = str(pick_device(args.device))
    if Path(args.classifier).is_dir():
        classifier: Any = args.classifier
    else:  # TorchScript / factory: build the adapter from the --classifier-* flags
        classifier = classifier_from_args(args, device=device)
    oracle: Any = False if args.no_oracle else args.oracle
    if oracle and not Path(oracle).exists() and ":" not in str(oracle):  # found out only after RUN is written otherwise
        from medxgan.runtime.errors import MedxganError

        raise MedxganError(f"--oracle {oracle}: not found (expected a classifier run directory or a TorchScript file)")
    options = dict(
        preset=args.preset, steps=args.steps, batch_size=args.batch_size,
        lambda_cls=args.lambda_cls, seed=args.seed, size=args.size, log_every=args.log_every,
        sample_every=args.sample_every, ckpt_every=args.ckpt_every, keep_last=args.keep_last,
        oracle=oracle, oracle_epochs=args.oracle_epochs, max_minutes=args.max_minutes,
        preset_overrides=_parse_overrides(args.overrides) or None, positive=args.positive, negative=args.negative,
        csv=args.csv, skip_bad=args.skip_bad, classifier_source=args.classifier, monitor_samples=args.monitor_samples,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile,
    )
    if args.resume:  # options left out take the run's own values (GanTrainConfig.from_run); given ones are checked against it
        from medxgan.cli import was_given

        defaults = GanTrainConfig()
        dest = {"preset_overrides": "overrides", "classifier_source": "classifier", "oracle": "no_oracle"}
        given = {k: v for k, v in options.items() if v != getattr(defaults, k) or was_given(args, dest.get(k, k))}
        result = train_gan(args.data, classifier, args.out, resume=True, device=device, quiet=args.quiet, **given)
    else:
        result = train_gan(args.data, classifier, args.out, GanTrainConfig(**options), device=device, quiet=args.quiet)
    if not context_from_env().is_main:  # under torchrun rank 0 alone reports
        return 0
    m = result["metrics"]
    keys = ["disent", "cls_neg", "cls_pos", "oracle_neg", "oracle_pos", "diversity"]
    print("final: " + " ".join(f"{k}={m[k]:.3f}" for k in keys if k in m))
    from medxgan.pipeline import settle_run

    # the preset's in-fill "auto", chosen now while the data is here and kept in the run (minutes on a CPU, once)
    settled = settle_run(args.out, device=device) if args.choose_infill else None
    if settled:
        print(settled)
    print(f"GAN run written to {args.out}")
    return 0
