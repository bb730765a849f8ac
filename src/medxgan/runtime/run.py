"""One training run's lifecycle and the shape of its ``config.json``, the same for every trainer.

Every trainer (classifier, GAN, its oracle, the inversion encoder, the CycleGAN) reads top to bottom::

    run = TrainingRun(out, kind=KIND)
    run.check_start(resume)                         # the directory half of the resume policy, before any data is loaded
    ...load the data, fingerprint it...
    run.open(resume, settings, may_change=("steps",))   # on resume: the stored settings compared (runtime.loop.open_run)
    run.begin(record)                               # config.json, status "running"
    loop = run.train(trainer, LoopOptions(...))     # runtime.loop.train_loop; a non-finite step marks it "failed" and raises
    run.finish(loop, weights={"model": model}, metrics={...})   # weights checked finite, saved; status "finished"

``config.json`` (``run_format`` 2; written only through this object)::

    kind, run_format, medxgan_version, torch_version   what wrote it
    <the trainer's own record>                         arch, preset, train, ... (each kind's readers are unchanged)
    settings                                           what defines the run, compared on --resume
    resumes                                            [{"from_step", "changed"}]
    status                                             "running" | "finished" | "failed" (+ failed_at_step, failure)
    fingerprints                                       content hashes of the final weights by name (+ dependencies')
    metrics                                            the final metrics
    steps_done, train_seconds, stopped_early          the loop's outcome

A run that went non-finite is ``failed`` and never ``finished``: the loop stops at the step (runtime.loop),
and :meth:`TrainingRun.finish` refuses weights that hold NaN/inf (marks the run failed, raises).
:func:`read_run` reads any run, old shapes included (runs written before ``run_format`` 2 kept their
fingerprint, metrics and step count under each kind's own names: they are read from there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from medxgan.runtime.loop import LoopOptions, LoopResult, RunStart, Trainer, TrainingFailed, check_start, nonfinite_tensors, open_run, train_loop
from medxgan.runtime.runs import RunDir, fingerprint_state_dict

__all__ = ["RUN_FORMAT", "TrainingRun", "RunRecord", "read_run"]

RUN_FORMAT = 2
Weights = torch.nn.Module | Mapping[str, torch.Tensor]


class TrainingRun:
    """A training run of one ``kind`` in ``path`` (``out_arg``: the argument that chose it, named in the
    messages; None for a folder a trainer derives itself). ``is_main``: rank 0, the only writer."""

    def __init__(self, path: str | os.PathLike, kind: str, *, out_arg: str | None = "out", is_main: bool = True):
        self.dir = RunDir(path)
        self.kind, self.out_arg, self.is_main = kind, out_arg, is_main
        self.start = RunStart(False)
        self.settings: dict[str, Any] = {}
        self.record: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def resumed(self) -> bool:
        return self.start.resumed

    @property
    def stored(self) -> dict[str, Any]:
        """The config.json of the run being resumed ({} for a new run)."""
        return self.start.stored

    def check_start(self, resume: bool) -> None:
        """Before any data is loaded: temp files of a killed write removed; ``resume`` without a checkpoint,
        an existing run without ``resume`` and a corrupt latest checkpoint refused (runtime.loop.check_start)."""
        check_start(self.dir, resume=resume, kind=self.kind, out_arg=self.out_arg)

    def open(self, resume: bool, settings: Mapping[str, Any], may_change: Sequence[str] = ()) -> RunStart:
        """The resume policy (runtime.loop.open_run): on ``resume`` the stored settings must equal ``settings``
        except those in ``may_change`` (their change is recorded under ``resumes``)."""
        self.start = open_run(self.dir, resume=resume, kind=self.kind, settings=settings, may_change=may_change, out_arg=self.out_arg)
        self.settings = dict(settings)
        return self.start

    def begin(self, record: Mapping[str, Any]) -> None:
        """config.json with the trainer's ``record``, the settings, the resumes so far and status "running"."""
        self.record = {**record, "settings": self.settings, "resumes": self.start.resumes}
        self._write(status="running")

    def train(self, trainer: Trainer, options: LoopOptions) -> LoopResult:
        """runtime.loop.train_loop on this run; sets ``options.resume`` (the run was opened to resume: its latest
        checkpoint is restored) and ``options.is_main`` from the run."""
        options.resume, options.is_main = self.resumed, self.is_main
        return train_loop(trainer, self.dir, options)

    def finish(self, loop: LoopResult | None, *, weights: Mapping[str, Weights | None] | None = None, metrics: Mapping[str, Any] | None = None,
               fingerprints: Mapping[str, Any] | None = None, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the final ``weights`` (name -> module or state dict; None entries skipped) and config.json
        with status "finished", their fingerprints (plus ``fingerprints``: dependencies'), ``metrics``, the
        loop's outcome and ``record`` (more of the trainer's own fields). Weights holding NaN/inf are not
        written: the run is marked failed and TrainingFailed raised. Returns the written config (rank 0)."""
        states = {name: (w.state_dict() if isinstance(w, torch.nn.Module) else dict(w)) for name, w in (weights or {}).items() if w is not None}
        bad = [f"{name}.{t}" for name, st in states.items() for t in nonfinite_tensors(st)]
        step = loop.step if loop is not None else None
        if bad:
            failure = f"non-finite final weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
            if self.is_main:
                self.dir.update_config(status="failed", failed_at_step=step, failure=failure)
            raise TrainingFailed(f"{self.path}: {failure}; the run is marked failed, its last checkpoint is kept")
        if not self.is_main:
            return {}
        prints = {name: fingerprint_state_dict(st) for name, st in states.items()}
        for name, st in states.items():
            self.dir.save_weights(name, st)
        outcome = {} if loop is None else {"steps_done": loop.step, "train_seconds": round(loop.elapsed, 1),
                                           "stopped_early": loop.stopped_early}
        self.record.update(record or {})
        return self._write(status="finished", fingerprints={**prints, **(fingerprints or {})}, metrics=dict(metrics or {}), **outcome)

    def _write(self, **lifecycle: Any) -> dict[str, Any]:
        if not self.is_main:
            return {}
        self.path.mkdir(parents=True, exist_ok=True)
        return self.dir.write_config(self.kind, run_format=RUN_FORMAT, **{**self.record, **lifecycle})


@dataclass(frozen=True)
class RunRecord:
    """A run's config.json read into the common shape (:func:`read_run`); ``config``: the whole file as stored."""

    path: Path
    kind: str | None
    run_format: int
    version: str | None
    status: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    steps_done: int | None = None
    config: dict[str, Any] = field(default_factory=dict)


def read_run(path: str | os.PathLike, expect_kind: str | tuple[str, ...] | None = None) -> RunRecord:
    """Any run's config.json in the common shape. Runs written before ``run_format`` 2 are read from each
    kind's own names: a classifier's ``fingerprint`` / ``test`` / ``epochs_done``, a CycleGAN's weight
    ``fingerprints`` and ``steps``, a GAN's classifier fingerprint; a missing ``metrics`` is {}."""
    rd = RunDir(path)
    c = rd.read_config(expect_kind=expect_kind)
    fmt = int(c.get("run_format") or 1)
    prints = dict(c.get("fingerprints") or {})
    metrics = dict(c.get("metrics") or {}) if isinstance(c.get("metrics"), dict) else {}
    steps = c.get("steps_done")
    if fmt < 2:  # read-compatibility with the shapes of each kind before the common one
        if isinstance(c.get("fingerprint"), str):
            prints.setdefault("model", c["fingerprint"])
        if isinstance(c.get("classifier"), dict) and c["classifier"].get("fingerprint"):
            prints.setdefault("classifier", c["classifier"]["fingerprint"])
        if isinstance(c.get("classifier_fingerprint"), str):
            prints.setdefault("classifier", c["classifier_fingerprint"])
        if isinstance(c.get("test"), dict):
            metrics.setdefault("test", c["test"])
            metrics.setdefault("best_val_auc", c.get("best_val_auc"))
        steps = steps if steps is not None else c.get("epochs_done", c.get("steps") if c.get("status") == "finished" else None)
    return RunRecord(path=rd.path, kind=c.get("kind"), run_format=fmt, version=c.get("medxgan_version"), status=c.get("status"),
                     settings=dict(c.get("settings") or {}), fingerprints=prints, metrics=metrics,
                     steps_done=int(steps) if isinstance(steps, (int, float)) else None, config=c)
