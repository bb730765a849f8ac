"""The one training-loop skeleton and the one resume policy, shared by every trainer.

A trainer is anything with the step contract (the CycleGAN reference's ``BaseModel`` idea)::

    class MyTrainer:
        def step(self) -> dict[str, float]: ...        # one unit of work (a batch, or an epoch); scalar stats
        def state_dict(self) -> dict: ...              # everything it needs to continue (nets, optimisers, data RNG)
        def load_state_dict(self, state: dict) -> None: ...

and the trainer function of each kind drives it through the run object (runtime.run.TrainingRun, which
calls :func:`check_start`, :func:`open_run` and :func:`train_loop` and owns config.json)::

    run = TrainingRun(out, KIND)
    run.check_start(resume)
    run.open(resume, settings={...}, may_change=("steps",))
    ...build the trainer (from run.stored when resuming)...; run.begin(record)
    loop = run.train(trainer, LoopOptions(total=steps, cadence=Cadence(log_every=..., ckpt_every=...),
                                          max_minutes=max_minutes, on_log=..., on_sample=...))
    run.finish(loop, weights={...}, metrics=...)

The policy (:func:`open_run`): ``resume`` without a checkpoint is an error; an existing run without
``resume`` is an error (unfinished: how to continue it; finished: choose another --out), except a run
killed before its first checkpoint (nothing to continue: it starts afresh in place); a resume whose
recorded settings differ from the given ones is refused naming every difference, except the settings in
``may_change`` (steps, epochs, time budget), whose change is recorded in ``config.json`` under
``resumes``; temp files left by a killed write are removed first (only the project's ``.medxgan-tmp-*``
names, only in a folder with medxgan's marker: runtime.outdir).

The loop (:func:`train_loop`) owns the step counter, training time (logging, sampling and checkpoints do
not count), ``max_minutes`` (every rank stops at the same step), the metrics/sample/checkpoint cadence,
the progress bar, the global RNG state in every checkpoint and restoring it on resume, and the
non-finite stop: a step whose stats are NaN/inf marks the run ``failed`` and raises.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from medxgan.runtime.distributed import any_rank
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.outdir import is_empty, is_marked, sweep_temp
from medxgan.runtime.progress import progress
from medxgan.runtime.records import array, check_record, obj, text
from medxgan.runtime.runs import RunDir
from medxgan.runtime.seeding import get_rng_state, set_rng_state

__all__ = ["nonfinite_tensors", "Trainer", "Cadence", "LoopOptions", "RunStart", "LoopResult", "check_start", "open_run", "remove_temp_files", "resume_or_restart", "train_loop", "TrainingFailed"]


class Trainer(Protocol):
    def step(self) -> Mapping[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingFailed(MedxganError):
    """Training produced a non-finite loss; the run is marked ``failed``."""


@dataclass
class Cadence:
    """Every how many steps the loop logs metrics, writes samples and checkpoints (0 = only at the end)."""

    log_every: int = 0
    sample_every: int = 0
    ckpt_every: int = 0
    keep_last: int = 3

    def check(self) -> "Cadence":
        for name in ("log_every", "sample_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise MedxganError(f"{name}: {getattr(self, name)} must be >= 0")
        return self


@dataclass
class RunStart:
    """What :func:`open_run` decided: a fresh run (``stored`` empty) or a resume of ``stored``."""

    resumed: bool
    stored: dict[str, Any] = field(default_factory=dict)
    resumes: list[dict[str, Any]] = field(default_factory=list)  # history for config.json


@dataclass
class LoopResult:
    step: int
    elapsed: float
    last_record: dict[str, Any]
    stopped_early: bool


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def remove_temp_files(path: Path) -> list[Path]:
    """Delete what a killed atomic write left behind in a run directory: the project's temp names
    (``.medxgan-tmp-*``: files of an atomic write, checkpoint folders, directory copies), and only in a
    folder medxgan made (runtime.outdir: nothing is removed from an unmarked folder)."""
    return sweep_temp(path)


def nonfinite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in a nested state that hold NaN/inf."""
    bad: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and state.numel() and not bool(torch.isfinite(state.detach()).all()):
            bad.append(prefix or "tensor")
    elif isinstance(state, Mapping):
        for k, v in state.items():
            bad.extend(nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            bad.extend(nonfinite_tensors(v, f"{prefix}.{i}" if prefix else str(i)))
    return bad


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


# what every trainer's config.json holds for a resume (runtime.records): the settings compared, the resumes so far
RUN_FIELDS = {"settings": obj(null=True), "resumes": array(obj(), null=True), "status": text(null=True)}


def check_start(run: RunDir, *, resume: bool, kind: str, out_arg: str | None = "out") -> None:
    """The directory half of the resume policy, cheap enough to run before any data is loaded: removes
    temp files of a killed write; refuses ``resume`` without a checkpoint, and an existing run without
    ``resume``. ``out_arg``: the argument that chose the directory (None for a folder the trainer derives
    itself, such as RUN/encoder/)."""
    remove_temp_files(run.path)
    where = f"{out_arg} {run.path}" if out_arg else str(run.path)
    if resume:
        if run.latest_checkpoint() is None:
            raise MedxganError(f"resume {run.path}: nothing to resume (no checkpoint); drop --resume to start a new run", arg="resume")
        check_record(run.read_config(expect_kind=kind), RUN_FIELDS, run.config_path)
        run.check_latest_checkpoint()  # a corrupt checkpoint is named (with the previous good one) before any data is loaded
    elif run.exists() or run.latest_checkpoint() is not None:
        status = run.read_config().get("status") if run.exists() else "running"
        if run.latest_checkpoint() is None and status != "finished":
            return  # killed before its first checkpoint: nothing to continue, so the run starts afresh in place
        if status == "finished":
            raise MedxganError(f"{where}: already holds a run ({kind}, finished); {_elsewhere(out_arg)}", arg=out_arg)
        raise MedxganError(f"{where}: already holds a run ({kind}, {status}, not finished); continue it with --resume or "
                           f"{_elsewhere(out_arg)}", arg=out_arg)


def _flat(v: Any, prefix: str) -> dict[str, Any]:
    if isinstance(v, Mapping):
        out: dict[str, Any] = {}
        for k, x in v.items():
            out.update(_flat(x, f"{prefix}.{k}"))
        return out
    return {prefix: _norm(v)}


def _difference(key: str, new: Any, old: Any) -> str:
    """One setting's change in a few words: nested settings (a preset) name only their changed entries."""
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        a, b = _flat(new, key), _flat(old, key)
        changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        names = [k for k in changed if k.endswith(".name")]  # another preset: its name says it
        first = names or changed[:3]
        shown = ", ".join(f"{k} {_fmt(a.get(k))} (the run has {_fmt(b.get(k))})" for k in first)
        return shown + (f" and {len(changed) - len(first)} more {key} value(s)" if len(changed) > len(first) else "")
    return f"{key} {_fmt(new)} (the run has {_fmt(old)})"


def _elsewhere(out_arg: str | None) -> str:
    return f"choose another {out_arg} directory" if out_arg else "delete the folder to start afresh"


def open_run(run: RunDir, *, resume: bool, kind: str, settings: Mapping[str, Any], may_change: Sequence[str] = (),
             out_arg: str | None = "out") -> RunStart:
    """The resume policy, the same for every trainer (see the module docstring): :func:`check_start`, then
    on ``resume`` the comparison of ``settings`` with the stored ones.

    ``settings``: what defines the run (data fingerprint, seed, batch size, network/preset, classifier
    fingerprint, ... and the budget settings named in ``may_change``), JSON-able; the trainer stores them
    in ``config.json`` under ``settings`` and they are compared on resume.
    """
    check_start(run, resume=resume, kind=kind, out_arg=out_arg)
    settings = dict(settings)
    if resume:
        stored = check_record(run.read_config(expect_kind=kind), RUN_FIELDS, run.config_path)
        before = stored.get("settings") or {}
        differ = [k for k in settings if k not in may_change and k in before and _norm(before[k]) != _norm(settings[k])]
        if differ:
            what = "; ".join(_difference(k, settings[k], before[k]) for k in differ)
            raise MedxganError(f"resume {run.path}: cannot resume with other settings: {what}; resume with the run's settings "
                               f"(only {', '.join(may_change) or 'nothing'} may change) or {_elsewhere(out_arg)}", arg="resume")
        changed = {k: [before.get(k), settings[k]] for k in may_change if k in settings and _norm(before.get(k)) != _norm(settings[k])}
        resumes = list(stored.get("resumes") or [])
        resumes.append({"from_step": int(run.load_checkpoint_step()), "changed": changed})
        return RunStart(True, stored, resumes)
    return RunStart(False)


def resume_or_restart(path: str | Path) -> bool:
    """For drivers that continue whatever they find (the demo's stages, the GAN's own oracle): True if
    ``path`` holds a checkpoint to ``resume`` from; otherwise a partial run there (nothing in it can be
    continued) is removed and False is returned, so that the trainer starts it afresh."""
    run = RunDir(path)
    if run.latest_checkpoint() is not None:
        return True
    if run.path.exists():
        # never delete a folder medxgan did not make: this one, or the run/demo folder it is a stage of, carries the marker
        if not (is_marked(run.path) or is_marked(run.path.parent) or is_empty(run.path)):
            raise MedxganError(f"{run.path}: holds files medxgan did not write (no marker); nothing in it was touched -- "
                               "move them away to continue")
        shutil.rmtree(run.path)
    return False


def _norm(v: Any) -> Any:
    """Compare settings as JSON would store them (tuples = lists)."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    return v


@dataclass
class LoopOptions:
    """How :func:`train_loop` runs a trainer (one object instead of a long keyword list).

    ``total``: steps (or epochs, ``unit``) to reach; ``cadence``: log/sample/checkpoint every N steps;
    ``resume``: continue from the run's latest checkpoint; ``max_minutes``: stop (every rank at the same
    step) after this much training time. Hooks (rank 0 only): ``on_log(step, means) -> extra fields`` of
    the logged record, ``on_sample(step)`` writes samples, ``postfix(record) -> text`` for the progress
    bar. ``is_main``: rank 0, the only one that writes; ``device``: the device whose RNG stream is
    checkpointed (CUDA) and over which ``max_minutes`` is agreed."""

    total: int
    cadence: Cadence = field(default_factory=Cadence)
    resume: bool = False
    max_minutes: float | None = None
    on_log: Callable[[int, dict[str, float]], dict[str, Any]] | None = None
    on_sample: Callable[[int], None] | None = None
    postfix: Callable[[dict[str, Any]], str] | None = None
    desc: str = "train"
    quiet: bool = False
    is_main: bool = True
    device: torch.device | None = None
    unit: str = "step"

    def out_of_time(self, elapsed: float) -> bool:
        return self.max_minutes is not None and elapsed >= 60.0 * self.max_minutes


def train_loop(trainer: Trainer, run: RunDir, options: LoopOptions) -> LoopResult:
    """Run ``trainer.step()`` until ``options.total`` steps are done (or ``max_minutes`` of training time).

    Resume (``options.resume``): the latest checkpoint's ``trainer`` state, global RNG state, step,
    training time and running sums are restored and ``metrics.jsonl`` is cut back to that step. Every
    logged record is ``{"step", <mean of each stat since the last log>, **on_log(step, means), "seconds"}``.
    ``on_sample(step)`` writes samples. Checkpoints hold ``{"trainer", "rng", "elapsed", "acc"}``. A
    trainer whose ``period_done`` attribute is true after a step (an epoch ended) gets a log record, a
    sample call and a checkpoint at that step as well, as at the last step.
    Only ``is_main`` (rank 0) writes; every rank steps, and ``max_minutes`` stops all ranks at one step.
    """
    o = options
    cadence = o.cadence.check()
    dev = o.device or torch.device("cpu")
    step, elapsed, acc = _restore(trainer, run, o, dev)
    last_record: dict[str, Any] = {}
    bar = progress(total=o.total, initial=min(step, o.total), desc=o.desc, disable=o.quiet or None, unit=o.unit)
    t_last = time.perf_counter()
    stop = False
    try:
        while step < o.total:
            stats = trainer.step()
            step += 1
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            _refuse_nonfinite(trainer, run, o, stats, step, elapsed)
            last_stats = dict(stats)  # logged as they are when one step is logged (ints, flags)
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            acc["_n"] = acc.get("_n", 0.0) + 1
            if o.max_minutes is not None:  # every rank must stop at the same step
                stop = any_rank(o.out_of_time(elapsed), dev)
            # a trainer with periods (epochs) says when one ended: log, samples and a checkpoint then too
            boundary = step == o.total or stop or bool(getattr(trainer, "period_done", False))
            if _due(step, cadence.log_every) or boundary:
                if o.is_main:
                    last_record = _log_record(run, o, step, last_stats, acc, elapsed)
                    if o.postfix is not None:
                        bar.set_postfix_str(o.postfix(last_record))
                    t_last = time.perf_counter()  # monitoring time does not count as training time
                acc = {}
            if o.is_main and o.on_sample is not None and (_due(step, cadence.sample_every) or boundary):
                o.on_sample(step)
                t_last = time.perf_counter()
            if o.is_main and (_due(step, cadence.ckpt_every) or boundary):
                _checkpoint(trainer, run, cadence, dev, step, {"elapsed": elapsed, "acc": acc})
                t_last = time.perf_counter()
            bar.update(1)
            if stop:
                break
    finally:
        bar.close()
    return LoopResult(step, elapsed, last_record, stopped_early=step < o.total)


def _restore(trainer: Trainer, run: RunDir, o: LoopOptions, dev: torch.device) -> tuple[int, float, dict[str, float]]:
    """(step, training time, running sums) to start from: the latest checkpoint's on resume (the trainer
    and the RNG states restored, metrics.jsonl cut back to its step), else zero (metrics.jsonl removed)."""
    if not o.resume:
        if o.is_main:
            run.metrics_path.unlink(missing_ok=True)
        return 0, 0.0, {}
    st = run.load_checkpoint()
    trainer.load_state_dict(st["trainer"])
    set_rng_state(st["rng"])
    if dev.type == "cuda" and "rng_device" in st:  # rank 0's device stream, onto this rank's device
        torch.cuda.set_rng_state(st["rng_device"].to(torch.uint8), dev)
    step = int(st["step"])
    if o.is_main:
        run.truncate_metrics(step)
    return step, float(st["elapsed"]), dict(st.get("acc") or {})


def _refuse_nonfinite(trainer: Trainer, run: RunDir, o: LoopOptions, stats: Mapping[str, float], step: int, elapsed: float) -> None:
    """The non-finite stop: NaN/inf stats (the trainer's ``finite_keys``, default all), or, before anything
    is measured or checkpointed, NaN/inf weights or optimiser state (a step can poison the weights while its
    own loss, computed before the update, was finite) mark the run failed (rank 0) and raise TrainingFailed."""
    finite_keys = getattr(trainer, "finite_keys", None)  # default: every stat must be finite
    bad = sorted(k for k in finite_keys or stats if not math.isfinite(float(stats[k])))
    boundary = step == o.total or bool(getattr(trainer, "period_done", False))
    if not bad and (boundary or _due(step, o.cadence.log_every) or _due(step, o.cadence.ckpt_every) or o.out_of_time(elapsed)):
        bad_state = nonfinite_tensors(trainer.state_dict())
        if bad_state:
            bad = [f"weights/state ({', '.join(bad_state[:3])}{', ...' if len(bad_state) > 3 else ''})"]
    if not bad:
        return
    if o.is_main:
        run.update_config(status="failed", failed_at_step=step, failure=f"non-finite {', '.join(bad)}")
    raise TrainingFailed(f"{run.path}: non-finite {', '.join(bad)} at {o.unit} {step}; the run is marked failed, "
                         "its last checkpoint is kept (lower the learning rate, or resume from an earlier checkpoint)")


def _log_record(run: RunDir, o: LoopOptions, step: int, last_stats: dict[str, Any], acc: dict[str, float],
                elapsed: float) -> dict[str, Any]:
    """One metrics.jsonl record: the step, the stats' means since the last record (one step's stats as they
    are), the ``on_log`` fields and the training time so far."""
    rec: dict[str, Any] = {"step": step}
    rec.update(last_stats if acc["_n"] == 1 else {k: v / acc["_n"] for k, v in acc.items() if k != "_n"})
    if o.on_log is not None:
        rec.update(o.on_log(step, dict(rec)))
    rec["seconds"] = round(elapsed, 1)
    run.log_metrics(rec)
    return rec


def _checkpoint(trainer: Trainer, run: RunDir, cadence: Cadence, dev: torch.device, step: int, clock: dict[str, Any]) -> None:
    """A checkpoint: the trainer's state, the global RNG states (and the CUDA stream in use), ``clock``
    (training time, running sums)."""
    ckpt = {"trainer": trainer.state_dict(), "rng": get_rng_state(), **clock}
    if dev.type == "cuda":  # the stream of the device in use (get_rng_state has all devices')
        ckpt["rng_device"] = torch.cuda.get_rng_state(dev)
    run.save_checkpoint(step, ckpt, keep_last=cadence.keep_last)
