"""`medxgan demo`: the whole pipeline on built-in brain-MRI phantoms, ending in one HTML report.

    from medxgan.demo import run_demo
    info = run_demo("medxgan-demo", quick=True)     # {"report": ".../report/index.html", "timings": {...}, ...}

Stages (each one resumable; a finished stage is reused when the demo is run again with the same --out):

=============  ==========================  =====================================================
stage          directory                   finished when
=============  ==========================  =====================================================
data           ``DIR/data``                ``dataset.json`` exists (phantoms are written atomically)
classifier     ``DIR/classifier``          ``config.json`` status "finished" (paper-cnn)
gan            ``DIR/gan``                 ``config.json`` status "finished" and ``generator.safetensors``
                                           (default preset; it also trains its independent oracle)
encoder        ``DIR/gan/encoder``         only with ``encoder_steps`` > 0: `train-encoder`'s ``config.json``
                                           status "finished"
eval           ``DIR/eval``                ``results.json`` covers the requested n and every method
cross          ``DIR/eval-icbm152``        only ``--real-brain``: the same for ICBM152 slices with lesions (another brain)
inpainter ...  ``DIR/inpainter``, ...       only ``--real-brain``: the learned in-fill and its evaluations (demo_infill.py)
frames         ``DIR/eval/frames``         one ``<image_id>.npz`` per medXGAN row of the report
report         ``DIR/report/index.html``   always rewritten (cheap)
=============  ==========================  =====================================================

An interrupted stage continues where it stopped (classifier and GAN from their checkpoints, the
evaluation per image). The settings of a demo (:class:`DemoConfig`, seed) are stored in
``DIR/demo.json``; running again with other settings (e.g. ``--quick`` on a default demo) is refused
with a message, or starts afresh with ``restart=True`` (``--restart``).

Budgets: :meth:`DemoConfig.default` is sized to finish in about 30 minutes on 2 CPU cores,
:meth:`DemoConfig.quick` in about 5 (fewer images, epochs, GAN steps, evaluated images, inversion
steps, no max-sensitivity); the report says prominently that quick numbers are not the benchmark.
With a GPU (``device="auto"``) every stage uses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medxgan.demo_methods import DEMO_METHOD_OPTIONS, DEMO_PERTURBATION, eval_done, method_settings  # noqa: F401 (re-exported)
from medxgan.runtime.atomic import atomic_write_bytes, atomic_write_json
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import resume_or_restart
from medxgan.runtime.outdir import is_empty, mark, require_ours
from medxgan.report.markup import read_json

__all__ = ["DemoConfig", "run_demo", "interpolation_frames", "STAGES"]

STAGES = ("data", "classifier", "gan", "encoder", "eval", "frames", "report")  # "encoder" only with encoder_steps > 0
_LEARNED = ("inpainter", "learned", "cross-learned")  # the learned in-fill stages of --real-brain (demo_infill.py)
_DOWNSTREAM = {"data": ("classifier", "gan", "eval", "cross") + _LEARNED, "classifier": ("gan", "eval", "cross") + _LEARNED,
               "gan": ("encoder", "eval", "cross") + _LEARNED, "encoder": ("eval", "cross", "learned", "cross-learned"),
               "inpainter": ("learned", "cross-learned")}
#: ``DemoConfig.kind`` of the real-anatomy demo (`medxgan demo --real-brain`): Colin27 slices with inserted lesions, and the
#: "cross" stage: the same classifier and GAN evaluated on ICBM152 slices with inserted lesions (another brain)
REAL_BRAIN = "real-brain"
#: settings added after demos were made, at the value that reproduces those demos (an older demo.json lacks them)
_ADDED_SETTINGS = {"encoder_steps": 0, "encoder_max_minutes": None, "inpainter_steps": 1000}
DEMO_JSON = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo, in one place (the time budget is visible here).

    Costs measured on the project's 2-core CPU machine while it was shared (load 5-10), divided by the
    contention (~2.5-3.5x) for an idle machine (2026-11-26; to be re-measured on an idle machine):

    * phantoms: ~5 ms per image (2000: ~10 s);
    * classifier epoch (paper-cnn, 1400 train images): ~3 s; oracle epoch (resnet-small): ~5 s;
    * GAN step, default preset, batch 32: ~0.65 s (1.8 s at load 5);
    * inversion of one image, 200 steps x 1 restart: ~1.7 s (4.8 s at load 5, batch of 8). The library
      default (400 steps x 2 restarts) is ~4x that: too slow for a 30-minute demo, since every noise
      level re-explains, i.e. re-inverts, every image (and max-sensitivity 10x per image);
    * the baselines: ~1.5 s per image and noise level in all (IG 2 x 50 steps, SmoothGrad 25, occlusion);
    * the perturbation baselines (DEMO_PERTURBATION, light, once per image): ~21 s per image at load 3-7 (Extremal
      Perturbation 15.3, RISE 3.9, Meaningful Perturbation 1.6): 621 s of a 1177 s evaluation method loop on 30 brain
      scans (2026-12-07, README "The demo's evaluation with the perturbation baselines").

    Measured 2026-12-02 with the masked ``default`` preset, two demos side by side on the 2 cores (load 4-5):
    data 53 s, classifier + oracle 139 s, GAN 16 min (the cap; 1137 of 2000 steps), evaluation 10.3 min
    (30 images, residual-counterfactual inversion), 32.3 min in all (benchmarks/demo/archive/brain-2026-12-02/).
    Measured alone on an idle machine (2 threads, 2026-12-02, the ``default`` preset): data 8 s, classifier 29 s,
    GAN + oracle 513 s (all 2000 steps, ~0.24 s per step), evaluation 144 s: 11.6 min in all
    (benchmarks/demo/archive/brain-cf-residual-alone-2026-12-02/). Two demos side by side with OMP_NUM_THREADS=1:
    28.1 min each, GAN capped at ~1695 steps.
    Earlier estimate (the ``joint`` preset): ~2 min data + classifier + oracle, <= 14 min GAN (1200 steps), ~8-9 min evaluation
    (30 images x 4 inversions + max-sensitivity on 3 images), ~0.5 min report: ~25 min.
    quick(): ~4 min (the GAN, 250 steps capped at 2.5 min, is most of it). Measured on the shared machine:
    5.0 min at load 5-6 (the GAN hit its time cap after 159 of 250 steps: disentanglement still 0, so
    quick-mode medXGAN maps are not meaningful); 6.5 min at load 7-10 with 300 steps (60 done).
    """

    mode: str = "default"  # "default", "quick" or "custom" (tests / experiments)
    # data
    kind: str = "brain-mri"
    n_images: int = 2000
    size: int = 64
    # classifier
    classifier_arch: str = "paper-cnn"
    # 30, not 12: at 12 epochs the chest classifier was still improving (best epoch = the last; test AUC 0.945,
    # sensitivity 0.72); at 30: best epoch 26, AUC 0.965, sensitivity 0.88 (~45 s more; 2026-12-06)
    classifier_epochs: int = 30
    # GAN (+ its oracle)
    gan_preset: str = "default"
    gan_steps: int = 2000
    gan_batch_size: int = 32
    gan_log_every: int = 100
    gan_ckpt_every: int = 250
    # A runaway guard, not a budget: the GAN's budget is its step count, so a busy or slow machine gets the same generator,
    # only later (issue 32: a 16-minute cap stopped a fresh-clone demo after 238 of 2000 steps beside another job). 90 min
    # is 1.5x the slowest step rate in this docstring (1.8 s per step at load 5: 60 min for 2000 steps) and ~10x an idle
    # machine's 8.5 min; the report's first line says when it was hit.
    gan_max_minutes: float | None = 90.0
    gan_monitor_samples: int = 256
    gan_overrides: tuple[tuple[str, Any], ...] = ()  # preset field overrides, e.g. (("g_width", 8),) for tests
    oracle_epochs: int = 10
    # evaluation
    methods: tuple[str, ...] | None = None  # None: every method (the baselines, DEMO_PERTURBATION and both medXGAN methods)
    eval_n: int = 30
    eval_batch_size: int = 8
    # Adam steps from the GAN's anchor encoder; None: the library's default (400); ignored when the GAN run has a trained
    # encoder. 75 (was 200): the evaluation stage 1.50x / 1.52x faster on the chest / brain demo GANs of 2026-12-06 with
    # the same localisation (IoU 0.441 -> 0.442 / 0.596 -> 0.610) and twin gain (benchmarks/performance/RESULTS.md)
    inversion_steps: int | None = 75
    inversion_restarts: int | None = 1  # None: the library's default (2); ignored when the GAN run has a trained encoder
    # > 0: train an inversion encoder (`medxgan train-encoder`) for this many steps after the GAN; the evaluation
    # then inverts with the encoder's short schedule (the encoder path). Off by default: measured not to pay for
    # itself within the demo (benchmarks/performance/RESULTS.md, issue 15).
    encoder_steps: int = 0
    encoder_max_minutes: float | None = None  # safety cap on the encoder's training time
    # --real-brain only: Adam steps of the learned in-fill (`medxgan train-inpainter --gan`, InpainterConfig's default 1000);
    # its medXGAN rows are evaluated next to the run's default in-fill's (demo_infill.py); 0: no learned in-fill stages
    inpainter_steps: int = 1000
    noise_sigmas: tuple[float, ...] = (0.02, 0.05, 0.1)
    max_sensitivity: bool = True
    max_sensitivity_n: int = 3
    n_resamples: int = 1000
    # report
    report_rows: int = 12
    frames: int = 11

    @classmethod
    def default(cls) -> "DemoConfig":
        return cls()

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(mode="quick", n_images=600, classifier_epochs=6, gan_steps=250, gan_log_every=50, gan_ckpt_every=125,
                   gan_max_minutes=15.0, gan_monitor_samples=128, oracle_epochs=4, eval_n=6, inversion_steps=75,
                   inversion_restarts=1, noise_sigmas=(0.05,), max_sensitivity=False, max_sensitivity_n=0, n_resamples=500,
                   report_rows=6)

    def to_dict(self) -> dict[str, Any]:
        """JSON-normalised (tuples become lists), so that it compares equal to what demo.json holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def inversion(self, encoder: bool = False) -> dict[str, int] | None:
        """The evaluation's inversion schedule; ``encoder``: the GAN run has an encoder from `train-encoder`, whose
        own short schedule (:data:`medxgan.gan.run.ENCODER_INVERSION_STEPS` x 1 start) is then used."""
        if encoder:
            return None
        inv = {k: v for k, v in (("steps", self.inversion_steps), ("restarts", self.inversion_restarts)) if v is not None}
        return inv or None


# ---- small helpers ---------------------------------------------------------------------------
def _machine(dev: Any) -> dict[str, Any]:
    import torch

    m: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "device": str(dev)}
    if getattr(dev, "type", None) == "cuda":
        try:
            m["gpu"] = torch.cuda.get_device_name(dev)
        except Exception:  # pragma: no cover - GPU only
            pass
    return m


def _classifier_done(d: Path) -> bool:
    cfg = read_json(d / "config.json")
    return isinstance(cfg, dict) and cfg.get("status") == "finished" and (d / "model.safetensors").is_file()


def _gan_done(d: Path) -> bool:
    cfg = read_json(d / "config.json")
    return isinstance(cfg, dict) and cfg.get("status") == "finished" and (d / "generator.safetensors").is_file()


def _encoder_done(d: Path) -> bool:
    """``d``: the GAN run's encoder sub-run (RUN/encoder/)."""
    cfg = read_json(d / "config.json")
    return isinstance(cfg, dict) and cfg.get("status") == "finished" and (d / "encoder.safetensors").is_file()


def _frames_todo(eval_dir: Path, rows: int) -> list[str]:
    from medxgan.evaluate.store import RESULTS_JSON, frames_file, input_maps_file, method_maps_file
    from medxgan.report.html import select_rows

    res = read_json(eval_dir / RESULTS_JSON) or {}
    ids = [str(r["image_id"]) for r in select_rows(res, rows)]
    ids = [i for i in ids if method_maps_file(eval_dir, i, "medxgan-diff").is_file() and input_maps_file(eval_dir, i).is_file()]
    return [i for i in ids if not frames_file(eval_dir, i).is_file()]


# ---- interpolation frames (the runner does not store them) -----------------------------------
def interpolation_frames(eval_dir: str | os.PathLike, gan: Any, image_ids: list[str] | None = None, *, frames: int = 11,
                         device: str = "auto", inversion: dict[str, Any] | None = None, rows: int = 12) -> list[Path]:
    """Latent interpolation G(z1*, alpha z2*), alpha in [0, 1], for explained images of an evaluation,
    written to ``EVAL/frames/<image_id>.npz`` (``frames`` F x C x H x W float32 in [-1, 1],
    ``frame_probs`` (F,), ``alphas`` (F,)) for the HTML report.

    ``gan``: a ``MedXGAN`` (its inversion cache is reused: images it has just explained are not
    inverted again) or a GAN run directory (loaded with the evaluation's inversion settings, which
    reproduces the evaluation's codes: the inversion is seeded; the evaluated classifier is used when
    it was a classifier run directory, else the GAN run's own). ``image_ids``: default the rows the
    report shows (:func:`medxgan.report.html.select_rows`) that have medXGAN maps and no frames yet.
    """
    import io

    import numpy as np
    import torch

    from medxgan.evaluate.store import RESULTS_JSON, frames_file, input_maps_file

    ev = Path(eval_dir)
    ids = _frames_todo(ev, rows) if image_ids is None else list(image_ids)
    if not ids:
        return []
    if isinstance(gan, (str, os.PathLike)):
        from medxgan.pipeline import MedXGAN

        ecfg = (read_json(ev / RESULTS_JSON) or {}).get("config") or {}
        inv = inversion if inversion is not None else (ecfg.get("inversion") or {})
        clf = ecfg.get("classifier")  # the evaluated classifier when it was a run directory, else the GAN run's own
        gan = MedXGAN.load(gan, classifier=clf if isinstance(clf, str) and Path(clf).is_dir() else None, device=device, **inv)
    engine = gan.engine
    images = torch.stack([torch.from_numpy(np.load(input_maps_file(ev, i))["image"]) for i in ids])
    written = []
    for k in range(0, len(ids), 8):
        cf = engine.counterfactuals(images[k : k + 8])
        fr, probs = engine.interpolation(cf, frames)
        for j, iid in enumerate(ids[k : k + 8]):
            buf = io.BytesIO()
            np.savez_compressed(buf, frames=fr[j].numpy().astype(np.float32), frame_probs=probs[j].numpy().astype(np.float32),
                                alphas=np.linspace(0.0, 1.0, frames, dtype=np.float32))
            written.append(atomic_write_bytes(frames_file(ev, iid), buf.getvalue()))
    return written


# ---- the cross-brain stage of the real-anatomy demo --------------------------------------------
def _cross_brain(cfg: DemoConfig, paths: dict[str, Path], gan: Any, seed: int, dev: Any, inversion: Any, show_progress: bool) -> None:
    """ICBM152 slices with inserted lesions (all test; the same lesion and augmentation settings), evaluated with the
    demo's classifier, GAN and inversion as the demo's own test set, plus its own report page (eval-icbm152/report/).
    It measures localisation, validity and twin fidelity on another brain; robustness to input noise (which re-explains
    every image once per noise level, most of the evaluation's time) and the sanity check are the Colin27 stage's."""
    from medxgan.data.real_anatomy import synth_cross_brain
    from medxgan.evaluate.runner import evaluate
    from medxgan.report.html import write_report

    data = paths["cross"].parent / "data-icbm152"
    if not (data / "dataset.json").is_file():
        synth_cross_brain(data, n=max(300, 10 * cfg.eval_n), size=cfg.size, seed=seed, show_progress=show_progress)
    evaluate(data, paths["cross"], gan=gan, **method_settings(cfg.methods, gan), n=cfg.eval_n, split="test",
             subset="pred-pos", noise_sigmas=(), seed=seed, device=dev, batch_size=cfg.eval_batch_size,
             max_sensitivity=False, n_resamples=cfg.n_resamples, inversion=inversion, show_progress=show_progress)
    write_report(paths["cross"], max_rows=cfg.report_rows)


# ---- the demo --------------------------------------------------------------------------------
def _check_settings(out: Path, settings: dict[str, Any], restart: bool) -> dict[str, Any] | None:
    """The earlier demo.json (None for a fresh directory); refuse mismatching settings unless restart."""
    dj = out / DEMO_JSON
    old = read_json(dj) if dj.is_file() else None
    if old is None:
        if not is_empty(out) and not restart:
            raise MedxganError(f"out {out}: not empty and not a demo directory (no {DEMO_JSON}); choose another --out", arg="out")
        return None
    old_settings = {**_ADDED_SETTINGS, **(old.get("settings") or {})}
    if old_settings != settings:
        if not restart:
            was, now = old_settings.get("mode", "?"), settings.get("mode")
            diff = sorted(k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k))
            hint = f" (it was made in {was} mode, this call asks for {now} mode)" if was != now else ""
            raise MedxganError(f"out {out}: holds a demo with other settings{hint}: {', '.join(diff)} differ; its stages cannot be "
                               f"reused. Use another --out, or --restart to discard it and start afresh", arg="out")
        return None
    return old


def _wipe(out: Path) -> None:
    for name in ("data", "classifier", "gan", "eval", "report", "data-icbm152", "eval-icbm152", "inpainter", "eval-learned-gan",
                 "eval-icbm152-learned-gan", DEMO_JSON):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


class _StageBook:
    """The bookkeeping of one call: runs or reuses each stage, removes the stages built on one that is redone, and
    rewrites ``demo.json`` after every stage (so that an interrupted demo says how far it got)."""

    def __init__(self, out: Path, paths: dict[str, Path], info: dict[str, Any], hook: Callable[[str], None] | None) -> None:
        self.out, self.paths, self.info, self.hook = out, paths, info, hook
        self.stages: dict[str, dict[str, Any]] = info["stages"]
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def save(self) -> None:
        atomic_write_json(self.out / DEMO_JSON, self.info)

    def run(self, name: str, done: Callable[[], bool], work: Callable[[], Any], label: str) -> None:
        from medxgan.runtime.progress import Stage

        if done():
            self.timings[name] = 0.0
            self.reused.append(name)
            self.stages.setdefault(name, {"seconds": None})["reused"] = True
            print(f"[medxgan] {label}: reusing {self.paths[name]} (finished earlier)", flush=True)
        else:
            # a stage that has to run makes everything built on it stale (e.g. data/ deleted by hand)
            for later in _DOWNSTREAM.get(name, ()):
                if self.paths[later].exists():
                    print(f"[medxgan] removing {self.paths[later]}: it was built on the {name} stage, which is being redone", flush=True)
                    shutil.rmtree(self.paths[later])
                    self.stages.pop(later, None)
            if self.hook is not None:
                self.hook(name)
            with Stage(label) as st:
                work()
            self.timings[name] = st.seconds
            self.stages[name] = {"seconds": round(st.seconds, 2), "reused": False}
        self.save()

    def record_totals(self, total_s: float) -> None:
        self.info.update(total_s=round(total_s, 2), timings={k: round(v, 2) for k, v in self.timings.items()}, reused=self.reused)
        self.save()


class _StageWork:
    """The work of each stage, with the demo's settings; the MedXGAN model is loaded once, when a stage first needs it,
    and shared by the evaluation, the cross-brain stage and the interpolation frames (their inversions are cached)."""

    def __init__(self, cfg: DemoConfig, paths: dict[str, Path], seed: int, dev: Any, show_progress: bool) -> None:
        self.cfg, self.paths, self.seed, self.dev, self.show_progress = cfg, paths, seed, dev, show_progress
        self.inversion: dict[str, int] | None = None  # set once the encoder stage is settled
        self._model: Any = None

    def synth(self) -> None:
        cfg, data = self.cfg, self.paths["data"]
        if cfg.kind == REAL_BRAIN:
            from medxgan.data.real_anatomy import synth_real_brain

            synth_real_brain(data, n=cfg.n_images, size=cfg.size, seed=self.seed, show_progress=self.show_progress)
            return
        from medxgan.data.phantoms import synthesize

        synthesize(cfg.kind, data, n=cfg.n_images, size=cfg.size, seed=self.seed, overwrite=True, show_progress=self.show_progress)

    def train_classifier(self) -> None:
        from medxgan.classifiers.training import format_test_report, train_classifier

        cfg, clf = self.cfg, self.paths["classifier"]
        r = train_classifier(self.paths["data"], clf, arch=cfg.classifier_arch, epochs=cfg.classifier_epochs, seed=self.seed,
                             size=cfg.size, device=str(self.dev), resume=resume_or_restart(clf), quiet=not self.show_progress)
        print(format_test_report(r), flush=True)

    def train_gan(self) -> None:
        from medxgan.gan.train import train_gan

        cfg, gan = self.cfg, self.paths["gan"]
        train_gan(self.paths["data"], str(self.paths["classifier"]), gan, preset=cfg.gan_preset, steps=cfg.gan_steps,
                  batch_size=cfg.gan_batch_size, seed=self.seed, log_every=cfg.gan_log_every, ckpt_every=cfg.gan_ckpt_every,
                  resume=resume_or_restart(gan), oracle_epochs=cfg.oracle_epochs, size=cfg.size, device=str(self.dev),
                  max_minutes=cfg.gan_max_minutes, monitor_samples=cfg.gan_monitor_samples,
                  preset_overrides=dict(cfg.gan_overrides) or None, quiet=not self.show_progress)

    def train_encoder(self) -> None:
        from medxgan.gan.encoder_train import train_encoder

        cfg, enc = self.cfg, self.paths["encoder"]
        train_encoder(self.paths["gan"], self.paths["data"], steps=cfg.encoder_steps, seed=self.seed, resume=resume_or_restart(enc),
                      device=str(self.dev), max_minutes=cfg.encoder_max_minutes, quiet=not self.show_progress)

    def model(self) -> Any:
        if self._model is None:
            from medxgan.pipeline import MedXGAN

            m = MedXGAN.load(self.paths["gan"], device=self.dev, **(self.inversion or {}))
            m.config["out"] = str(self.paths["gan"])  # how the evaluation names the GAN
            self._model = m
        return self._model

    def evaluate(self) -> None:
        from medxgan.evaluate.runner import evaluate
        from medxgan.evaluate.store import PLOTS_DIR
        from medxgan.report.plots import write_plots

        cfg = self.cfg
        res = evaluate(self.paths["data"], self.paths["eval"], gan=self.model(), **method_settings(cfg.methods, self.model()),
                       n=cfg.eval_n, split="test", subset="pred-pos", noise_sigmas=cfg.noise_sigmas, seed=self.seed, device=self.dev,
                       batch_size=cfg.eval_batch_size, max_sensitivity=cfg.max_sensitivity, max_sensitivity_n=cfg.max_sensitivity_n or None,
                       n_resamples=cfg.n_resamples, inversion=self.inversion, show_progress=self.show_progress,
                       sanity=True, sanity_n=min(10, cfg.eval_n))  # the cascading-randomisation check on 10 images
        write_plots(res, Path(self.paths["eval"]) / PLOTS_DIR)

    def cross_brain(self) -> None:
        _cross_brain(self.cfg, self.paths, self.model(), self.seed, self.dev, self.inversion, self.show_progress)

    def train_inpainter(self) -> None:
        from medxgan.demo_infill import train_demo_inpainter

        train_demo_inpainter(self.paths["data"], self.paths["gan"], self.paths["inpainter"], self.cfg.inpainter_steps, self.seed,
                             self.show_progress)

    def evaluate_learned(self, stage: str) -> None:
        """``stage`` "learned" (Colin27, the main evaluation's data) or "cross-learned" (ICBM152, the cross stage's)."""
        from medxgan.demo_infill import evaluate_learned

        cfg = self.cfg
        data = self.paths["data"] if stage == "learned" else self.paths["cross"].parent / "data-icbm152"
        evaluate_learned(data, self.paths[stage], (self.paths["gan"], self.paths["inpainter"]), cfg, seed=self.seed, dev=self.dev,
                         inversion=self.inversion, show_progress=self.show_progress,
                         main_report=self.paths["cross"] if stage == "cross-learned" else None)

    def frames(self) -> None:
        interpolation_frames(self.paths["eval"], self.model(), frames=self.cfg.frames, rows=self.cfg.report_rows)


def _run_stages(book: _StageBook, work: _StageWork) -> None:
    """data -> classifier -> GAN (+ oracle) -> [encoder] -> evaluation -> [cross-brain] -> interpolation frames."""
    cfg, paths = work.cfg, work.paths
    what = f"insert lesions into Colin27 slices ({cfg.n_images} images)" if cfg.kind == REAL_BRAIN else f"synthesise {cfg.n_images} {cfg.kind} phantoms"
    book.run("data", lambda: (paths["data"] / "dataset.json").is_file(), work.synth, what)
    book.run("classifier", lambda: _classifier_done(paths["classifier"]), work.train_classifier, f"train the classifier ({cfg.classifier_arch})")
    book.run("gan", lambda: _gan_done(paths["gan"]), work.train_gan, f"train medXGAN ({cfg.gan_preset} preset, {cfg.gan_steps} steps)")
    # the inversion encoder (optional): the evaluation then runs the encoder's short schedule
    if cfg.encoder_steps > 0:
        book.run("encoder", lambda: _encoder_done(paths["encoder"]), work.train_encoder, f"train the inversion encoder ({cfg.encoder_steps} steps)")
    # the encoder path whenever the run has a trained encoder (also one trained by hand with `medxgan train-encoder`)
    work.inversion = cfg.inversion(encoder=_encoder_done(paths["encoder"]))
    # evaluation, then interpolation frames for the report (sharing the inversions of the evaluation)
    book.run("eval", lambda: eval_done(paths["eval"], cfg.eval_n, cfg.methods), work.evaluate,
             f"explain and evaluate {cfg.eval_n} held-out predicted positives ({'all methods' if not cfg.methods else ', '.join(cfg.methods)})")
    if cfg.kind == REAL_BRAIN:
        book.run("cross", lambda: eval_done(paths["cross"], cfg.eval_n, cfg.methods), work.cross_brain,
                 f"cross-brain: the same classifier and GAN on {cfg.eval_n} ICBM152 positives")
        if cfg.inpainter_steps > 0:
            from medxgan.demo_infill import run_learned_stages

            run_learned_stages(book, work, eval_done)
    book.run("frames", lambda: not _frames_todo(paths["eval"], cfg.report_rows), work.frames, "latent interpolation frames for the report")


def summary_lines(eval_dir: Path) -> list[str]:
    """The demo's printed summary of its evaluation: every method's area-matched IoU, and the medXGAN counterfactual's
    validity with the oracle's specificity on the lesion-free twins next to it (issue 31); [] without results."""
    from medxgan.evaluate.oracle_calibration import judge_summary
    from medxgan.evaluate.store import RESULTS_JSON
    from medxgan.evaluate.tables import format_ci
    from medxgan.evaluate.twins import oracle_twin_specificity

    res = read_json(Path(eval_dir) / RESULTS_JSON)
    if not isinstance(res, dict) or not res.get("methods"):
        return []
    methods = res["methods"]
    iou = [(m, (r.get("metrics") or {}).get("localisation.iou_area_matched")) for m, r in methods.items() if m != "twin"]
    iou = sorted([(m, st) for m, st in iou if st and st.get("mean") is not None], key=lambda t: -t[1]["mean"])
    lines = ["area-matched IoU, mean [95 % CI]: " + ", ".join(f"{m} {format_ci(st)}" for m, st in iou)] if iou else []
    met = (methods.get("medxgan-diff") or {}).get("metrics") or {}
    group = "counterfactual_residual" if ((res.get("config") or {}).get("inversion") or {}).get("counterfactual") == "residual" else "counterfactual"
    if met.get(f"{group}.valid_classifier"):
        lines.append(f"medXGAN counterfactual valid for the classifier {format_ci(met.get(f'{group}.valid_classifier'))}, for the oracle "
                     f"{format_ci(met.get(f'{group}.valid_oracle'))}; flipped within the mask {format_ci(met.get('flip.flipped'))}")
        judge = judge_summary(res.get("oracle_calibration"), oracle_twin_specificity(methods))
        if judge:
            lines.append(judge)
    return lines


def _write_final_report(book: _StageBook, cfg: DemoConfig, t_all: float) -> float:
    """The report (always rewritten) and the call's totals in demo.json; returns the call's seconds."""
    from medxgan.report.html import write_report
    from medxgan.runtime.progress import Stage

    book.record_totals(time.perf_counter() - t_all)  # what the report shows (the report's own time is not in it)
    with Stage("write the report") as st:
        write_report(book.out, max_rows=cfg.report_rows)
    book.timings["report"] = st.seconds
    book.stages["report"] = {"seconds": round(st.seconds, 2), "reused": False}
    total = time.perf_counter() - t_all
    book.record_totals(total)
    return total


def run_demo(out: str | os.PathLike = "medxgan-demo", quick: bool = False, device: str = "auto", seed: int = 0, *,
             config: DemoConfig | None = None, restart: bool = False, show_progress: bool = True,
             _stage_hook: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the demo in ``out`` and write ``out/report/index.html``.

    Args:
        quick: use :meth:`DemoConfig.quick` (about 5 min on 2 CPU cores) instead of the default (about 30).
        device: "auto" (GPU when there is one), "cpu", "cuda", ...
        seed: data, training and evaluation seed.
        config: explicit settings (overrides ``quick``).
        restart: discard an earlier demo in ``out`` whose settings differ, instead of refusing.
    Returns {"out", "report", "paths": {stage: path}, "timings": {stage: seconds in this call},
    "reused": [stages reused], "total_s", "settings"}; the same is stored in ``out/demo.json``.
    """
    from medxgan.runtime.device import pick_device

    cfg = config or (DemoConfig.quick() if quick else DemoConfig.default())
    for name, v in (("encoder_steps", cfg.encoder_steps), ("inpainter_steps", cfg.inpainter_steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise MedxganError(f"{name} {v!r}: must be an integer >= 0 (0: no {name.split('_')[0]} stage)", arg=name)
    if cfg.kind == REAL_BRAIN:  # before anything is written: one line saying what to install
        from medxgan.data.real_anatomy import colin27, require_icbm152

        colin27()
        require_icbm152()  # the cross stage's brain, checked now rather than after the first hour of work
    out = Path(out)
    settings = {**cfg.to_dict(), "seed": int(seed)}
    old = _check_settings(out, settings, restart)
    if old is None and restart:
        require_ours(out, "out", "--restart", kind="demo")  # --restart discards only a demo medxgan made (its marker), never a user's folder
        _wipe(out)
    dev = pick_device(device)
    t_all = time.perf_counter()
    if is_empty(out):
        mark(out, "demo")
    paths = {"data": out / "data", "classifier": out / "classifier", "gan": out / "gan", "encoder": out / "gan" / "encoder", "eval": out / "eval",
             "frames": out / "eval" / "frames", "report": out / "report" / "index.html", "cross": out / "eval-icbm152",
             "inpainter": out / "inpainter", "learned": out / "eval-learned-gan", "cross-learned": out / "eval-icbm152-learned-gan"}
    info: dict[str, Any] = {"settings": settings, "mode": cfg.mode, "device": str(dev), "machine": _machine(dev),
                            "paths": {k: str(v) for k, v in paths.items()}, "stages": dict((old or {}).get("stages") or {}), "total_s": None}
    book = _StageBook(out, paths, info, _stage_hook)
    book.save()
    _run_stages(book, _StageWork(cfg, paths, seed, dev, show_progress))
    total = _write_final_report(book, cfg, t_all)
    report_path = paths["report"]
    print(f"[medxgan] demo finished in {total / 60:.1f} min ({total:.0f} s)"
          + (f"; reused: {', '.join(book.reused)}" if book.reused else ""), flush=True)
    print(f"[medxgan] report: {report_path.resolve()}", flush=True)
    from medxgan.demo_infill import learned_summary_lines, main_infill_label
    learned = learned_summary_lines(paths["learned"])
    for line in ([main_infill_label(paths["eval"])] if learned else []) + summary_lines(paths["eval"]) + learned:
        print(f"[medxgan] {line}", flush=True)
    if cfg.mode == "quick":
        print("[medxgan] quick mode: quality traded for time; numbers are not the benchmark", flush=True)
    return {"out": str(out), "report": str(report_path), "paths": {k: str(v) for k, v in paths.items()}, "timings": book.timings,
            "reused": book.reused, "total_s": total, "settings": settings, "stages": book.stages}
