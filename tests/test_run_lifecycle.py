"""The run object (runtime.run.TrainingRun): one lifecycle and one config.json shape for every trainer, and
read_run reading the shapes written before it (each kind's own names for fingerprint, metrics, steps)."""

from __future__ import annotations

import json

import pytest
import torch

from medxgan.runtime.loop import Cadence, LoopOptions, TrainingFailed
from medxgan.runtime.run import RUN_FORMAT, TrainingRun, read_run
from medxgan.runtime.runs import RunDir, fingerprint_module

COMMON = {"kind", "run_format", "medxgan_version", "torch_version", "settings", "resumes", "status", "fingerprints", "metrics",
          "steps_done", "train_seconds", "stopped_early"}


def assert_common_shape(cfg: dict, kind: str) -> None:
    """A finished run's config.json in the common shape (the trainer's own record besides)."""
    assert COMMON <= set(cfg), COMMON - set(cfg)
    assert cfg["kind"] == kind and cfg["run_format"] == RUN_FORMAT and cfg["status"] == "finished"
    assert isinstance(cfg["fingerprints"], dict) and cfg["fingerprints"] and isinstance(cfg["metrics"], dict)


class Walk:
    """A toy trainer: w moves by a seeded random step; ``poison_at``: the weights become NaN at that step."""

    def __init__(self, poison_at: int | None = None):
        self.w, self.n, self.poison_at = torch.zeros(3), 0, poison_at
        self.gen = torch.Generator().manual_seed(0)

    def step(self):
        self.n += 1
        self.w = self.w + torch.randn(3, generator=self.gen)
        if self.n == self.poison_at:
            self.w = self.w * float("nan")
        return {"loss": 1.0}

    def state_dict(self):
        return {"w": self.w.clone(), "n": self.n, "gen": self.gen.get_state()}

    def load_state_dict(self, st):
        self.w, self.n = st["w"].clone(), int(st["n"])
        self.gen.set_state(st["gen"].to(torch.uint8))


def _toy_run(path, steps, resume=False, poison_at=None):
    run = TrainingRun(path, "toy")
    run.check_start(resume)
    run.open(resume, {"seed": 0, "steps": steps}, may_change=("steps",))
    run.begin({"note": "a toy"})
    assert json.loads((path / "config.json").read_text())["status"] == "running"
    toy = Walk(poison_at)
    loop = run.train(toy, LoopOptions(total=steps, cadence=Cadence(log_every=1, ckpt_every=2), quiet=True))
    weights = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        weights.weight.copy_(toy.w.view(1, 3))
    run.finish(loop, weights={"walk": weights}, metrics={"w0": float(toy.w[0])}, fingerprints={"data": "abc"})
    return weights


def test_lifecycle_writes_the_common_shape_and_resumes_exactly(tmp_path):
    full = _toy_run(tmp_path / "a", 6)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert_common_shape(cfg, "toy")
    assert cfg["note"] == "a toy" and cfg["steps_done"] == 6 and cfg["stopped_early"] is False
    assert cfg["fingerprints"] == {"walk": fingerprint_module(full), "data": "abc"}  # the weights' hash, and a dependency's
    assert torch.equal(RunDir(tmp_path / "a").load_weights("walk")["weight"], full.weight.detach())
    # interrupted after 4 steps, then resumed to 6: the same weights, the change of steps recorded
    _toy_run(tmp_path / "b", 4)
    cfg_b = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**cfg_b, "status": "running"}))
    resumed = _toy_run(tmp_path / "b", 6, resume=True)
    assert torch.equal(resumed.weight, full.weight)
    cfg_b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg_b["resumes"] == [{"from_step": 4, "changed": {"steps": [4, 6]}}] and cfg_b["status"] == "finished"


def test_a_non_finite_step_marks_the_run_failed_never_finished(tmp_path):
    with pytest.raises(TrainingFailed, match="non-finite"):
        _toy_run(tmp_path / "r", 6, poison_at=3)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["status"] == "failed" and cfg["failed_at_step"] == 3
    assert not (tmp_path / "r" / "walk.safetensors").exists()


def test_finish_refuses_non_finite_final_weights(tmp_path):
    run = TrainingRun(tmp_path / "r", "toy")
    run.check_start(False)
    run.open(False, {"seed": 0})
    run.begin({})
    bad = {"weight": torch.tensor([1.0, float("inf")])}
    with pytest.raises(TrainingFailed, match=r"non-finite final weights \(w.weight\)"):
        run.finish(None, weights={"w": bad})
    assert json.loads((tmp_path / "r" / "config.json").read_text())["status"] == "failed"
    assert not (tmp_path / "r" / "w.safetensors").exists()


# ---- the shapes written before run_format 2 (as each trainer wrote them), read in the common shape ----------------
OLD = {
    "classifier": {"kind": "classifier", "medxgan_version": "0.9.0", "arch": "paper-cnn", "settings": {"seed": 0, "epochs": 2},
                   "status": "finished", "fingerprint": "f00", "test": {"auc": 0.9}, "best_val_auc": 0.8, "epochs_done": 2},
    "medxgan": {"kind": "medxgan", "medxgan_version": "0.9.0", "status": "finished", "steps_done": 40, "metrics": {"disent": 0.9},
                "classifier": {"fingerprint": "c1"}},
    "medxgan-encoder": {"kind": "medxgan-encoder", "status": "finished", "steps_done": 8, "metrics": {"psnr_encoder": 20.0},
                        "classifier_fingerprint": "c1"},
    "cyclegan": {"kind": "cyclegan", "status": "finished", "steps": 12, "fingerprints": {"G_fa": "g1"}, "train": {"size": 32}},
}


@pytest.mark.parametrize("kind", sorted(OLD))
def test_read_run_reads_the_older_shapes(tmp_path, kind):
    (tmp_path / "config.json").write_text(json.dumps(OLD[kind]))
    rec = read_run(tmp_path, expect_kind=kind)
    assert rec.kind == kind and rec.run_format == 1 and rec.status == "finished"
    expected = {"classifier": ({"model": "f00"}, 2, {"test": {"auc": 0.9}, "best_val_auc": 0.8}),
                "medxgan": ({"classifier": "c1"}, 40, {"disent": 0.9}),
                "medxgan-encoder": ({"classifier": "c1"}, 8, {"psnr_encoder": 20.0}),
                "cyclegan": ({"G_fa": "g1"}, 12, {})}[kind]
    assert (rec.fingerprints, rec.steps_done, rec.metrics) == expected


def test_train_classifier_takes_a_config_and_stores_it(tmp_path):
    from helpers import write_dataset

    from medxgan.classifiers.training import ClassifierTrainConfig, train_classifier

    write_dataset(tmp_path / "d", n_per_class=6)
    cfg = ClassifierTrainConfig(epochs=1, batch_size=4, augment=False, seed=3)
    result = train_classifier(tmp_path / "d", tmp_path / "clf", cfg, quiet=True)
    stored = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert_common_shape(stored, "classifier")
    assert stored["fingerprints"]["model"] == stored["fingerprint"] == result["fingerprint"]
    assert stored["metrics"]["test"] == result["test"] and stored["steps_done"] == 1
    assert ClassifierTrainConfig.from_run(tmp_path / "clf") == cfg  # the config round-trips through config.json
    # a run written before train_config existed: its top-level fields
    del stored["train_config"]
    (tmp_path / "clf" / "config.json").write_text(json.dumps(stored))
    assert ClassifierTrainConfig.from_run(tmp_path / "clf").epochs == 1


def test_an_unknown_trainer_option_is_one_line_naming_it(tmp_path):
    from medxgan.classifiers.training import train_classifier
    from medxgan.runtime.errors import MedxganError

    with pytest.raises(MedxganError, match="train_classifier option 'epoks': unknown"):
        train_classifier(tmp_path / "d", tmp_path / "clf", epoks=3)


def test_no_trainer_bypasses_the_run_object():
    """Outside runtime/, nothing drives the loop or writes a run's config.json itself: every trainer (classifier,
    GAN, oracle, encoder, inpainter, CycleGAN) goes through TrainingRun, so every run has the common shape."""
    import ast
    from pathlib import Path

    import medxgan

    src = Path(medxgan.__file__).parent
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if path.parent.name == "runtime":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ("train_loop", "open_run", "write_config"):
                    offenders.append(f"{path.relative_to(src)}:{node.lineno} {name}")
    assert offenders == []
