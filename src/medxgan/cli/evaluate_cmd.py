"""`medxgan evaluate`: benchmark medXGAN against Captum baselines on data with ground-truth masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from medxgan.cli.common import add_class_mapping, add_classifier_spec, add_device, add_minimal_mask_options, minimal_mask_options

EXAMPLES = """examples:
  medxgan evaluate data/brain --gan runs/gan --out eval/                   # classifier: the GAN run's
  medxgan evaluate data/brain --classifier runs/clf --out eval-baselines/  # baselines only (no GAN)
  medxgan evaluate data/brain --gan runs/gan --out eval/ --n 100 --methods gradcam ig-black medxgan-diff medxgan-lig
  medxgan evaluate data/brain-sc --gan runs/gan-sc --out eval-sc/ --no-max-sensitivity   # shortcut phantoms
  medxgan evaluate data/brain --gan runs/gan --out eval/ --sanity --sanity-n 10   # + cascading randomisation check
  torchrun --nproc_per_node 4 -m medxgan evaluate data/brain --gan runs/gan --out eval/ --num-images 200  # 4 GPUs

writes OUT/results.json, results.csv, results.md, plots/*.png, per_image.jsonl and maps/<image>/<method>.npz.
A killed run continues where it stopped when started again with the same arguments.
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    from medxgan.evaluate.faithfulness import DEFAULT_FRACTIONS
    from medxgan.evaluate.runner import DEFAULT_NOISE_SIGMAS, SUBSETS
    from medxgan.explain.baselines import EXPLAINERS

    p = sub.add_parser(
        "evaluate", help="benchmark explanation methods (medXGAN, Grad-CAM, IG, SmoothGrad, occlusion, ...)",
        description="Explain the same images with every method and score the maps: localisation against the masks "
        "(true positives), deletion curves (mean / blur replacement), robustness to input noise, max-sensitivity, "
        "counterfactual validity (medXGAN), the shortcut marker (phantoms made with --shortcut) and cost. "
        "Aggregates are means with 95% bootstrap intervals.",
        epilog=EXAMPLES, formatter_class=formatter_class,
    )
    p.add_argument("data", help="dataset root (class folders, masks/ with the lesion masks)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (resumed if it holds the same evaluation)")
    p.add_argument("--gan", metavar="RUN", help="GAN run directory; without it the medXGAN methods are skipped")
    add_classifier_spec(p, required=False)
    p.add_argument("--gradcam-layer", metavar="NAME", default=None,
                   help="Grad-CAM's layer by module name (e.g. layer3, features.norm5; as in model.named_modules()); default: the last "
                        "block's output before global pooling, found on a probe batch (printed and stored in results.json)")
    p.add_argument("--methods", nargs="+", choices=list(EXPLAINERS), metavar="METHOD",
                   help=f"methods to evaluate (default: all but the perturbation baselines, which cost seconds per image; medxgan-mask "
                        f"only for a GAN whose explanations use the minimal mask; choices: {', '.join(EXPLAINERS)})")
    p.add_argument("--n", "--num-images", dest="n", type=int,
                   help="evaluate at most N images (a seeded random sample of the subset); under torchrun write --num-images "
                   "(torchrun's own parser takes --n for an abbreviation of its options)")
    p.add_argument("--split", default="test", help="dataset split ('all' for every image)")
    p.add_argument("--subset", choices=SUBSETS, default="pred-pos",
                   help="images to explain: pred-pos (predicted positive), tp, pos (positive in truth) or all")
    p.add_argument("--noise-sigmas", type=float, nargs="*", default=list(DEFAULT_NOISE_SIGMAS), metavar="S",
                   help="Gaussian noise std ([-1, 1] units) for the robustness check; none to skip")
    p.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS), metavar="F",
                   help="deletion fractions of the pixels")
    p.add_argument("--no-max-sensitivity", action="store_true", help="skip Captum's max-sensitivity (costly for medXGAN)")
    p.add_argument("--max-sensitivity-n", type=int, default=20, metavar="K",
                   help="compute max-sensitivity on the first K evaluated images only (0 = all)")
    p.add_argument("--sanity", action="store_true",
                   help="sanity check: cascading model-parameter randomisation of the classifier (SSIM / Spearman of |A| per "
                   "randomised block, a verdict per classifier-based method); results.json 'sanity', OUT/sanity.json")
    p.add_argument("--sanity-n", type=int, default=10, metavar="K", help="images for the sanity check (the first K evaluated)")
    p.add_argument("--size", type=int, help="load images at this size (default: the GAN's, else the data's)")
    p.add_argument("--batch-size", type=int, default=8, help="images explained together")
    p.add_argument("--steps", type=int, help="GAN inversion: maximum Adam steps per restart (default: the library's)")
    p.add_argument("--restarts", type=int, help="GAN inversion: starting points per image")
    p.add_argument("--counterfactual", choices=["generator", "residual"], default=None,
                   help="GAN: which counterfactual the medXGAN maps explain (default: the GAN preset's)")
    add_minimal_mask_options(p)
    p.add_argument("--seed", type=int, default=0, help="image order, noise and bootstrap seed")
    p.add_argument("--no-plots", action="store_true", help="do not write plots/")
    p.add_argument("--no-maps", action="store_true", help="do not save the maps under maps/")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier evaluation in --out with other settings")
    add_class_mapping(p)
    add_device(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medxgan.cli.common import check_classifier_flags, classifier_from_args
    from medxgan.evaluate.runner import EvaluateConfig, evaluate
    from medxgan.runtime.device import pick_device
    from medxgan.runtime.errors import MedxganError

    if args.classifier is None and args.gan is None:
        raise MedxganError("--classifier is required without --gan (with --gan the run's classifier is the default)")
    check_classifier_flags(args)  # --classifier-*/--target-* without --classifier: the GAN run records them
    mask_options = minimal_mask_options(args)
    if args.n is not None and args.n < 1:
        raise MedxganError(f"--n/--num-images {args.n}: must be >= 1")
    from medxgan.runtime.distributed import distributed

    with distributed(pick_device(args.device)) as ctx:  # under torchrun each rank evaluates a share; rank 0 merges
        clf = classifier_from_args(args, device=ctx.device) if args.classifier else None
        inversion = {**{k: v for k, v in (("steps", args.steps), ("restarts", args.restarts), ("counterfactual", args.counterfactual)) if v is not None},
                     **mask_options} or None
        config = EvaluateConfig(
            split=None if args.split == "all" else args.split, subset=args.subset, noise_sigmas=tuple(args.noise_sigmas),
            fractions=tuple(args.fractions), seed=args.seed, device=ctx.device, batch_size=args.batch_size, size=args.size,
            positive=args.positive, negative=args.negative, csv=args.csv, skip_bad=args.skip_bad, max_sensitivity=not args.no_max_sensitivity,
            max_sensitivity_n=args.max_sensitivity_n or None, inversion=inversion, save_maps=not args.no_maps,
            overwrite=args.overwrite, show_progress=ctx.is_main, sanity=args.sanity, sanity_n=args.sanity_n,
            gradcam_layer=args.gradcam_layer,
        )
        res = evaluate(args.data, args.out, classifier=clf, gan=args.gan, methods=args.methods, n=args.n, config=config)
    if not ctx.is_main:
        return 0
    if not args.no_plots:
        from medxgan.evaluate.store import PLOTS_DIR
        from medxgan.report.plots import write_plots

        write_plots(res, Path(args.out) / PLOTS_DIR)
    sl = res["slices"]
    print(f"slices: TP {sl['TP']}  FN {sl['FN']}  FP {sl['FP']}  TN {sl['TN']}; evaluated {sl['evaluated']} image(s) "
          f"x {len(res['config']['methods'])} method(s) ({res['run']['computed']} computed, {res['run']['skipped']} resumed)")
    for m, r in res["methods"].items():
        met = r["metrics"]
        iou = met.get("localisation.iou_area_matched", {}).get("mean")
        dele = met.get("deletion_mean.auc", {}).get("mean")
        t = met.get("cost.time_s", {}).get("mean")
        print(f"  {m:14s} IoU(area) {_f(iou)}  deletion AUC {_f(dele)}  {_f(t)} s/image"
              + (f"  invalid maps {r['n_invalid_maps']}" if r.get("n_invalid_maps") else ""))
    for m, r in (res.get("sanity") or {}).get("methods", {}).items():
        print(f"  sanity {m:14s} {r['verdict']}: {r['reason']}")
    for note in res.get("notes", []):
        if "skipped" in note or note.startswith(("inversion", "WARNING", "Grad-CAM layer")):
            print(f"note: {note}")
    print(f"results written to {args.out} (results.md, results.csv, results.json, plots/)")
    return 0


def _f(v) -> str:
    return "  –  " if v is None else f"{v:.3f}"
