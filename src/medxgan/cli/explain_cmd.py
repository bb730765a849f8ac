"""`medxgan explain`: counterfactual explanations, latent interpolation and LIG for image files."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_classifier_spec, add_device, add_minimal_mask_options

EXAMPLES = """examples:
  medxgan explain scan.dcm more/*.png --gan runs/gan --out explanations/
  medxgan explain data/brain/test/positive --gan runs/gan --out expl --frames 21 --restarts 4
  medxgan explain x.png --gan runs/gan --classifier runs/clf2 --out expl --lig-form authors
  torchrun --nproc_per_node 4 -m medxgan explain scans/ --gan runs/gan --out expl   # files shared across 4 GPUs

per image (OUT/<name>/): input, reconstruction, negative, difference(_overlay), lig_overlay,
accumulated_change_overlay, interpolation strip (p(pos) under each frame) + GIF, panel.png,
maps.npz and explanation.json; OUT/summary.json for the batch. Each image folder is written whole or
not at all; run the same command again after an interruption and the images already complete with the
same settings are kept (the run continues where it stopped).
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    from medxgan.gan import inversion as inv
    from medxgan.explain import lig

    p = sub.add_parser(
        "explain", help="explain a classifier's decision on image files with a trained medXGAN",
        description="Invert each image into the GAN's latent space, render its negative counterfactual G(z1*, 0), "
        "the difference map, the latent interpolation (with the classifier's probability per frame) and "
        "Latent Integrated Gradients. Images of another size or channel count are converted to the GAN's.",
        epilog=EXAMPLES, formatter_class=formatter_class,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (PNG/JPEG/TIFF/BMP/DICOM) or folders (searched recursively)")
    p.add_argument("--gan", required=True, metavar="RUN", help="GAN run directory written by `medxgan train`")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_classifier_spec(p, required=False)  # default: the classifier the GAN was trained against
    p.add_argument("--frames", type=int, default=11, help="interpolation frames from G(z1*, 0) to G(z1*, z2*)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"inversion: maximum Adam steps per start (default {inv.DEFAULT_STEPS}; 75 when the run has an encoder from train-encoder)")
    p.add_argument("--restarts", type=int, default=None,
                   help=f"inversion: starting points per image, best kept (default {inv.DEFAULT_RESTARTS}; 1 with an encoder)")
    p.add_argument("--lr", type=float, default=inv.DEFAULT_LR, help="inversion: Adam learning rate")
    p.add_argument("--counterfactual", choices=["generator", "residual"], default=None,
                   help="which counterfactual the maps, frames and LIG explain: generator = G(z1*, 0) (the paper); residual = the scan "
                        "with the generator's pathology change removed (default: the GAN preset's; residual for the default preset)")
    add_minimal_mask_options(p)
    p.add_argument("--tune", action="store_true", help="pivotal tuning: fine-tune a per-image copy of the generator around the inverted code")
    p.add_argument("--tune-steps", type=int, default=100, help="pivotal tuning steps")
    p.add_argument("--lig-form", choices=["path", "authors"], default="path",
                   help="path: path-sum LIG (completeness holds); authors: the authors' mean-gradient form (no completeness)")
    p.add_argument("--lig-steps", type=int, default=None, help=f"LIG path segments (default {lig.DEFAULT_LIG_STEPS} for path, {lig.AUTHORS_STEPS} for authors)")
    p.add_argument("--lig-output", choices=["logit", "prob"], default="logit", help="the classifier output LIG explains")
    p.add_argument("--batch-size", type=int, default=8, help="images inverted together")
    p.add_argument("--seed", type=int, default=0, help="seed of the inversion's random restarts")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off",
                   help="mixed precision for the generator/classifier passes of the inversion (GPU speed; the loss stays float32)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding the next images while one batch is explained")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medxgan.pipeline import MedXGAN
    from medxgan.runtime.errors import MedxganError

    for flag, value, low in (("--frames", args.frames, 2), ("--steps", args.steps, 0), ("--restarts", args.restarts, 1), ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value is not None and value < low:
            raise MedxganError(f"{flag} {value}: must be >= {low}")
    from medxgan.cli.common import check_classifier_flags, classifier_from_args, minimal_mask_options
    from medxgan.runtime.device import pick_device
    from medxgan.runtime.distributed import distributed

    mask_options = minimal_mask_options(args)  # checked before any work
    check_classifier_flags(args)  # --classifier-*/--target-* without --classifier: the GAN run records them

    with distributed(pick_device(args.device)) as ctx:  # under torchrun: each rank explains a share of the files
        classifier = classifier_from_args(args, device=ctx.device) if args.classifier else None
        schedule = {k: v for k, v in (("steps", args.steps), ("restarts", args.restarts), ("counterfactual", args.counterfactual)) if v is not None}
        schedule.update(mask_options)
        mx = MedXGAN.load(
            args.gan, classifier=classifier, device=ctx.device, lr=args.lr, seed=args.seed, tune_generator=args.tune,
            tune_steps=args.tune_steps, **schedule, **({"amp": args.amp} if args.amp != "off" else {}),
        )
        if ctx.is_main:
            print(mx.inversion_note(), flush=True)
            _warn_monitor(args.gan)
        summary = mx.explain_files(args.inputs, args.out, batch_size=args.batch_size, frames=args.frames, lig_form=args.lig_form,
                                   lig_steps=args.lig_steps, lig_output=args.lig_output, show_progress=ctx.is_main and not args.quiet,
                                   workers=args.workers)
    if not ctx.is_main:
        return 0
    for r in summary["images"]:
        print(f"{r['name']}: p(input) {r['prob_input']:.3f}  p(reconstruction) {r['prob_reconstruction']:.3f}  "
              f"p(negative) {r['prob_negative']:.3f}  p(residual) {r['prob_residual']:.3f}  PSNR {r['psnr']:.1f} dB  "
              f"LIG completeness error {100 * r['completeness_error_rel']:.1f}%" + (f"  NOTE {r['prior_note']}" if r.get("prior_note") else ""))
    _warn_low_psnr(args.gan, summary)
    if summary.get("resumed"):
        print(f"{summary['resumed']} of {summary['n_images']} explanation(s) were already complete in {args.out} with these settings "
              "and were kept (an explain run continues where it stopped; other settings recompute)")
    print(f"{summary['n_images']} explanation(s) written to {args.out} (summary.json)")
    return 0


def _warn_monitor(gan: str) -> None:
    """A GAN below its training gates (gan.gates) explains badly however convincing the pictures look: say so first."""
    import warnings

    from medxgan.gan.gates import run_quality

    q = run_quality(gan)
    if q["monitor_shortfalls"]:
        warnings.warn(f"{gan}: the GAN is below its training gates ({', '.join(q['monitor_shortfalls'])}; {q['steps_done']} steps): its "
                      "counterfactuals may change other things than what the classifier uses; train longer (the gallery is flagged)")


def _warn_low_psnr(gan: str, summary: dict) -> None:
    import warnings

    from medxgan.gan.gates import run_quality

    q = run_quality(gan)
    low = [f"{r['name']} {r['psnr']:.1f} dB" for r in summary["images"] if r.get("psnr") is not None and r["psnr"] < q["psnr_floor_db"]]
    if low:
        warnings.warn(f"{len(low)} reconstruction(s) below {q['psnr_floor_db']:.1f} dB ({q['psnr_floor_reason']}): {', '.join(low[:8])}"
                      f"{' ...' if len(low) > 8 else ''}; their counterfactuals explain a different image (more --steps/--restarts, "
                      "train-encoder, or --tune)")
