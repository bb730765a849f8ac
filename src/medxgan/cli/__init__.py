"""Command line: argument parsing only. Every subcommand calls one library function.

Each area registers its subcommands from its own small module (`register(subparsers)`), so that the
parser stays readable and areas do not edit one shared file.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Sequence

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.version import __version__

# (module, help) in the order they appear in `medxgan --help`
_AREAS = [
    "medxgan.cli.demo_cmd",
    "medxgan.cli.synth_cmd",
    "medxgan.cli.classifier_cmd",
    "medxgan.cli.gan_cmd",
    "medxgan.cli.encoder_cmd",
    "medxgan.cli.inpainter_cmd",
    "medxgan.cli.explain_cmd",
    "medxgan.cli.evaluate_cmd",
    "medxgan.cli.translate_cmd",
]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps epilog layout; shows a default only where it says something (not None/False/[])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in help_text.lower():
            return help_text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line (pointing at --help), exit 2
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="medxgan",
        description="Explain medical image classifiers with medXGAN; translate fundus photos to angiograms.",
        formatter_class=_Formatter,
        epilog="Run `medxgan COMMAND --help` for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"medxgan {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, print the full Python traceback as well (also: environment variable MEDXGAN_TRACEBACK=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in _AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # area not built yet
                continue
            raise
        module.register(sub, _Formatter)
    return parser


def _rank() -> int:
    """torchrun's RANK (0 without torchrun); read from the environment because the process group is
    already gone when an error reaches here."""
    from medxgan.runtime.distributed import context_from_env

    try:
        return context_from_env().rank
    except MedxganError:
        return 0


# library argument -> CLI flag where the flag is not simply "--" + the name with dashes
_FLAGS = {"output": "--classifier-output", "weights": "--classifier-weights", "mean": "--classifier-mean", "std": "--classifier-std",
          "preset_overrides": "--set"}


def flagged(exc: MedxganError) -> str:
    """The error message with the library argument names it is about (``exc.arg``) written as this
    CLI's flags: the one place where library names become flags."""
    msg = str(exc)
    for name in exc.arg:
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        msg = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", flag, msg, count=1)
    return msg


def _given_options(argv: Sequence[str] | None) -> frozenset[str]:
    """The ``dest`` of every option written on the command line (a default is not "given"): parsed again
    with every default suppressed, so that a resume can tell "left out" from "given, equal to the default"."""
    parser = build_parser()

    def suppress(p: argparse.ArgumentParser) -> None:
        p._defaults.clear()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    suppress(sp)
            else:
                a.default = argparse.SUPPRESS
    suppress(parser)
    try:
        ns, _ = parser.parse_known_args(argv)
    except SystemExit:  # cannot happen after the first parse succeeded; be safe
        return frozenset()
    return frozenset(vars(ns))


def was_given(args: argparse.Namespace, dest: str) -> bool:
    """True if option ``dest`` was written on the command line ``args`` came from (not just its default):
    :func:`main` stores the written options on the namespace itself (``args.given_options``)."""
    return dest in getattr(args, "given_options", frozenset())


def check_options(args: argparse.Namespace) -> None:
    """Every option checked before any work starts and before anything is written: the shared rules of
    ``medxgan.runtime.checks`` (ranges, finiteness, integer sizes, seeds) over all parsed options, any
    non-finite float option, and a writable ``--out``."""
    import math

    from medxgan.runtime.checks import check_args, check_option_memory, check_writable_dir

    values = {k: v for k, v in vars(args).items() if k not in ("func", "precheck", "command", "traceback", "given_options")}
    for k, v in values.items():  # no option of any command means anything with nan / inf
        for x in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(x, float) and not math.isfinite(x):
                raise MedxganError(f"{k} {x}: must be a finite number", arg=k)
    check_args(**values)
    check_option_memory(getattr(args, "given_options", ()), **values)  # absurd sizes (frames 1e8, ngf 1e6): one line naming the option, before any work
    if isinstance(values.get("out"), str):
        check_writable_dir(values["out"], "out")


# files an older medxgan wrote in the --out of each command (its folders have no marker yet): such a folder is
# still this command's to continue; any other non-empty folder without the marker is refused (runtime.outdir)
_LEGACY_OUT = {"train-classifier": ("config.json",), "train": ("config.json",), "explain": ("summary.json",),
               "evaluate": ("run.json",), "demo": ("demo.json",), "translate": ("config.json", "results.json")}
_CLAIMED = ("train-classifier", "train", "explain", "evaluate", "demo", "synth", "translate")


def _claim_out(args: argparse.Namespace) -> tuple[str, Any] | None:
    """The command's --out as its output folder: marked when new, locked for the command's lifetime (one
    writer per folder), refused when it is someone else's (runtime.outdir.claim_out). Rank 0 only."""
    from medxgan.runtime.outdir import check_out_not_input, claim_out

    out = getattr(args, "out", None)
    if args.command not in _CLAIMED or not isinstance(out, str) or _rank() != 0:
        return None
    if isinstance(getattr(args, "inputs", None), list):  # explain, translate apply: outputs never overwrite inputs
        check_out_not_input(out, args.inputs)
    kind = " ".join(str(x) for x in (args.command, getattr(args, "kind", None) or getattr(args, "translate_command", None)) if x)
    return out, claim_out(out, kind, "out", legacy=_LEGACY_OUT.get(args.command, ()))


def _release(claim: tuple[str, Any] | None, failed: bool) -> None:
    """Unlock the claimed --out; after a failure, a folder the claim created and nothing was written to goes again."""
    from medxgan.runtime.outdir import release_claim, unlock_out

    if claim is None:
        return
    try:
        release_claim(*claim) if failed else unlock_out(claim[0])
    except OSError:  # never hide the command's own error behind a failed clean-up
        if not failed:
            raise


def _show_traceback(args: argparse.Namespace | None) -> bool:
    import os

    return bool(getattr(args, "traceback", False)) or os.environ.get("MEDXGAN_TRACEBACK", "") not in ("", "0")


def _one_line_os_error(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {what}" if where else f"{type(exc).__name__}: {what}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from medxgan.runtime.allocator import tune_allocator
    from medxgan.runtime.progress import set_quiet

    tune_allocator()  # the command's own process only: large CPU tensors reuse heap memory (runtime/allocator.py)
    args.given_options = _given_options(argv)  # travels with args to the command (was_given)
    set_quiet(getattr(args, "quiet", False))
    import warnings

    # a warning is one line too (Python's default adds the source line that issued it)
    old_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"medxgan: warning: {' '.join(str(message).split())}\n"
    claim = None
    try:
        check_options(args)
        if getattr(args, "precheck", None) is not None:  # a command's own checks that must come before --out exists
            args.precheck(args)
        claim = _claim_out(args)
        result = args.func(args)
        _release(claim, failed=False)
    except (MedxganError, OSError, MemoryError) as exc:
        _release(claim, failed=True)
        if _rank() == 0:  # under torchrun every rank hits the same mistake: say it once
            if _show_traceback(args):
                import traceback

                traceback.print_exception(exc)
            if isinstance(exc, MedxganError):
                line = flagged(exc)
            elif isinstance(exc, OSError):  # a path the user gave (or the disk) refused: the path, one line
                line = _one_line_os_error(exc)
            else:
                line = f"out of memory ({exc or 'MemoryError'}); choose smaller sizes or batches"
            if not _show_traceback(args) and isinstance(exc, MedxganError) and getattr(exc, "user_code", False):
                line += " (run with --traceback for the full trace)"
            print(f"medxgan: error: {' '.join(line.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _release(claim, failed=True)
        print("medxgan: interrupted", file=sys.stderr)
        return 130
    finally:
        set_quiet(False)
        warnings.formatwarning = old_format
    return int(result or 0)
