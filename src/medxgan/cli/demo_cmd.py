"""`medxgan demo` (the whole pipeline on built-in phantoms) and `medxgan report` (the HTML report)."""

from __future__ import annotations

import argparse

from medxgan.cli.common import add_device

DEMO_EXAMPLES = """examples:
  medxgan demo                                # ~30 min on 2 CPU cores (minutes on a GPU) -> medxgan-demo/report/index.html
  medxgan demo --quick --out /tmp/demo-quick  # ~5 min; quality traded for time, numbers are not the benchmark
  medxgan demo --out medxgan-demo             # run again: finished stages are reused, an interrupted one continues
  medxgan demo --real-brain                   # real anatomy: Colin27 with inserted lesions (+ ICBM152 as another brain)
                                              # -> medxgan-demo-real-brain/ (needs: apt-get install mricron-data)

stages: data (phantoms) -> classifier (paper-cnn) -> gan (medXGAN + its oracle) -> eval (every method) -> report.
"""

REPORT_EXAMPLES = """examples:
  medxgan report medxgan-demo                 # a demo directory -> medxgan-demo/report/index.html
  medxgan report eval/                        # a `medxgan evaluate` output -> eval/report/index.html
  medxgan report eval/ --frames --gan runs/gan   # also compute the latent interpolation GIFs (inverts the shown images)

The report is self-contained: index.html plus img/ beside it, no network access needed.
"""


def register(sub: argparse._SubParsersAction, formatter_class: type) -> None:
    p = sub.add_parser(
        "demo", help="run everything on built-in brain-MRI phantoms and write one HTML report",
        description="Synthesise brain-MRI phantoms, train a classifier and medXGAN (with an independent oracle), explain and "
        "evaluate held-out positives with medXGAN and the baselines (Grad-CAM, IG, SmoothGrad, occlusion, saliency), "
        "and write a self-contained HTML report. Re-running with the same --out reuses the finished stages.",
        epilog=DEMO_EXAMPLES, formatter_class=formatter_class,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: medxgan-demo, or medxgan-demo-real-brain "
                   "with --real-brain)")
    p.add_argument("--real-brain", action="store_true", help="real anatomy instead of phantoms: axial slices of Colin27 (Debian "
                   "package mricron-data) with inserted lesions, exact masks and lesion-free twins, the same settings as the phantom "
                   "demo; then the same classifier and GAN evaluated on ICBM152 slices (another brain, from nilearn) with lesions")
    p.add_argument("--quick", action="store_true", help="about 5 minutes on 2 CPU cores: fewer images, epochs, GAN steps and "
                   "evaluated images (numbers are not the benchmark)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the evaluation")
    p.add_argument("--restart", action="store_true", help="discard an earlier demo in --out made with other settings and start afresh")
    p.add_argument("--encoder-steps", type=int, default=None, metavar="N",
                   help="also train an inversion encoder for N steps after the GAN (`medxgan train-encoder`); the evaluation then "
                   "inverts from E(x) with the encoder's short schedule (default: off, it does not pay for itself in the demo)")
    add_device(p)
    p.set_defaults(func=_demo)

    r = sub.add_parser(
        "report", help="write the self-contained HTML report of a demo or evaluation directory",
        description="Regenerate DIR/report/index.html from a demo directory (eval/, classifier/, gan/) or from the output of "
        "`medxgan evaluate` (training sections are then omitted). Nothing is recomputed unless --frames is given.",
        epilog=REPORT_EXAMPLES, formatter_class=formatter_class,
    )
    r.add_argument("dir", metavar="DIR", help="demo directory or evaluation directory")
    r.add_argument("--out", metavar="REPORT_DIR", help="where to write index.html and img/ (default: DIR/report)")
    r.add_argument("--max-rows", type=int, default=12, help="at most this many explained images (true positives first)")
    r.add_argument("--frames", action="store_true", help="compute the missing latent interpolation frames of the shown images "
                   "(needs the GAN run: the demo's gan/ or --gan)")
    r.add_argument("--gan", metavar="RUN", help="GAN run directory for --frames (default: DIR/gan of a demo directory)")
    add_device(r)
    r.set_defaults(func=_report)


def _demo(args: argparse.Namespace) -> int:
    import dataclasses

    from medxgan.demo import DemoConfig, run_demo

    config = None
    if args.encoder_steps is not None:
        config = dataclasses.replace(DemoConfig.quick() if args.quick else DemoConfig.default(), encoder_steps=args.encoder_steps)
    if args.real_brain:
        from medxgan.demo import REAL_BRAIN

        config = dataclasses.replace(config or (DemoConfig.quick() if args.quick else DemoConfig.default()), kind=REAL_BRAIN)
    out = args.out or ("medxgan-demo-real-brain" if args.real_brain else "medxgan-demo")
    run_demo(out, quick=args.quick, device=args.device, seed=args.seed, restart=args.restart, config=config)
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medxgan.report.html import find_dirs, write_report
    from medxgan.runtime.errors import MedxganError

    if args.max_rows < 0:
        raise MedxganError(f"--max-rows {args.max_rows}: must be >= 0")
    dirs = find_dirs(args.dir)
    if args.frames:
        from medxgan.demo import interpolation_frames

        gan = args.gan or (str(dirs["gan"]) if dirs.get("gan") is not None else None)
        if gan is None:
            raise MedxganError("--frames: needs the GAN run (--gan RUN)")
        if not Path(gan).is_dir():
            raise MedxganError(f"--gan {gan}: not a directory")
        n = len(interpolation_frames(dirs["eval"], gan, device=args.device, rows=args.max_rows))
        print(f"interpolation frames computed for {n} image(s)")
    report_dir = Path(args.out) if args.out else dirs["report"]
    existed = report_dir.exists()
    try:
        path = write_report(args.dir, args.out, max_rows=args.max_rows)
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        # the report reads nothing but the JSON files of DIR: a structure it cannot use is a hand-edited or foreign file
        if not existed:  # leave no half report behind
            import shutil

            shutil.rmtree(report_dir, ignore_errors=True)
        err = MedxganError(f"{dirs['eval'] / 'results.json'}: not the structure `medxgan evaluate` writes "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); edited by hand or from another tool?")
        err.user_code = True  # offer --traceback: the trace says which entry
        raise err from exc
    print(f"report: {path.resolve()}")
    return 0
