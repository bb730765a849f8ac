"""`medxgan train-classifier`: train a built-in binary classifier on a dataset in the project layout.

Model selection on validation AUC; test metrics (accuracy, AUC, sensitivity, specificity, confusion
matrix) written to the run directory and returned. Checkpoint after every epoch; `resume=True`
continues an interrupted run exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing
from medxgan.classifiers.architectures import build_architecture
from medxgan.classifiers.augment import augment_batch
from medxgan.classifiers.loading import CLASSIFIER_KIND, WEIGHTS_NAME
from medxgan.data import load_dataset
from medxgan.runtime.atomic import atomic_write_json, to_jsonable
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.ranking import roc_auc
from medxgan.runtime.checks import check_args, check_image_memory
from medxgan.runtime.loop import Cadence, LoopOptions, nonfinite_tensors
from medxgan.runtime.run import TrainingRun
from medxgan.runtime.runs import RunDir, fingerprint_module, fingerprint_state_dict
from medxgan.runtime.settings import replace_fields
from medxgan.runtime.seeding import seed_everything

DEFAULT_SIZE = {"paper-cnn": 64, "resnet-small": 128}


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, AUC, sensitivity, specificity and the confusion matrix [[TN, FP], [FN, TP]]."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int)
    pred = (probs >= threshold).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    n = len(labels)
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "auc": roc_auc(probs, labels),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": threshold,
    }


@torch.no_grad()
def predict_probs(adapter: ClassifierAdapter, images: torch.Tensor, batch_size: int = 256, device: Any = "cpu") -> np.ndarray:
    adapter.eval()
    out = [adapter.prob(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


class ClassifierTrainer:
    """The step contract of runtime.loop for a built-in classifier: one step = one epoch over the train
    split (seeded order and augmentation) followed by validation; keeps the best-validation-AUC weights."""

    finite_keys = ("train_loss",)  # val_auc is NaN when the val split holds one class: reported, not a failure

    def __init__(self, model: torch.nn.Module, pp: Preprocessing, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, *, batch_size: int, lr: float, weight_decay: float, seed: int, augment: bool, device: Any):
        self.model, self.pp, self.dev, self.augment, self.batch_size = model, pp, device, augment, batch_size
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self.optim = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sampler = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator().manual_seed(seed + 1)
        self.epoch = 0
        self.best: dict[str, Any] = {"auc": -1.0, "epoch": -1, "state": None}

    def step(self) -> dict[str, float]:
        model, n, bs = self.model, len(self.x_train), self.batch_size
        model.train()
        perm = torch.randperm(n, generator=self.sampler)
        losses = []
        for i in range(max(1, n // bs)):
            idx = perm[i * bs : (i + 1) * bs]
            xb, yb = self.x_train[idx], self.y_train[idx]
            if self.augment:
                xb = augment_batch(xb, self.aug_gen)
            loss = F.cross_entropy(model(xb.to(self.dev)), yb.to(self.dev))
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            self.optim.step()
            losses.append(loss.item())
        model.eval()
        self.epoch += 1
        if nonfinite_tensors(model.state_dict()):  # never measure a poisoned model: the loop marks the run failed
            return {"epoch": self.epoch, "train_loss": float("nan"), "val_auc": float("nan"), "val_accuracy": float("nan"), "best": False}
        adapter = ClassifierAdapter(copy.deepcopy(model), output="logits2", preprocessing=self.pp)
        val = binary_metrics(predict_probs(adapter, self.x_val, device=self.dev), self.y_val.numpy())
        val_auc = val["auc"] if np.isfinite(val["auc"]) else val["accuracy"]
        improved = val_auc > self.best["auc"]
        if improved:
            self.best = {"auc": float(val_auc), "epoch": self.epoch, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        return {"epoch": self.epoch, "train_loss": float(np.mean(losses)), "val_auc": val["auc"], "val_accuracy": val["accuracy"],
                "best": improved}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optim": self.optim.state_dict(), "sampler": self.sampler.get_state(),
                "aug_gen": self.aug_gen.get_state(), "epoch": self.epoch, "best_auc": self.best["auc"], "best_epoch": self.best["epoch"],
                "best_state": self.best["state"]}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optim"])
        self.sampler.set_state(st["sampler"])
        self.aug_gen.set_state(st["aug_gen"])
        self.epoch = int(st["epoch"])
        self.best = {"auc": float(st["best_auc"]), "epoch": int(st["best_epoch"]), "state": st["best_state"]}


@dataclass
class ClassifierTrainConfig:
    """Everything that configures a `train_classifier` run besides the data, RUN and the device (the CLI
    builds it, RUN/config.json stores it under ``train_config``, :meth:`from_run` reads it back).

    ``arch``: "paper-cnn" or "resnet-small"; ``epochs`` of Adam(``lr``, ``weight_decay``) on batches of
    ``batch_size`` (model selection on validation AUC); ``size``: input size in pixels (None: 64 for
    paper-cnn, 128 for resnet-small); ``channels``: convert the images to 1 or 3 (None: as the data);
    ``positive``/``negative``/``csv``/``skip_bad``: the class mapping of data.load_dataset; ``augment``:
    flips/affine/intensity; ``max_minutes``: stop after the epoch that exceeds this much training time
    and finish with the best epoch so far."""

    arch: str = "paper-cnn"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    size: int | None = None
    channels: int | None = None
    positive: list[str] | None = None
    negative: list[str] | None = None
    csv: str | None = None
    augment: bool = True
    skip_bad: bool = False
    max_minutes: float | None = None

    def check(self) -> "ClassifierTrainConfig":
        """Out-of-range values refused in one line naming the option (runtime.checks' shared rules first)."""
        check_args(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, seed=self.seed,
                   size=self.size, max_minutes=self.max_minutes)
        if self.epochs < 1:
            raise MedxganError(f"epochs {self.epochs}: must be at least 1", arg="epochs")
        if self.batch_size < 2:
            raise MedxganError(f"batch_size {self.batch_size}: must be at least 2", arg="batch_size")
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_run(cls, run: str | os.PathLike) -> "ClassifierTrainConfig":
        """The configuration a classifier run was trained with: its ``train_config``, or for a run written
        before there was one, the fields it stored at the top level."""
        stored = RunDir(run).read_config(expect_kind=CLASSIFIER_KIND)
        record = stored.get("train_config") if isinstance(stored.get("train_config"), dict) else stored
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


def train_classifier(data: str | os.PathLike, out: str | os.PathLike, config: ClassifierTrainConfig | None = None, *,
                     device: str = "auto", resume: bool = False, quiet: bool = False, **options: Any) -> dict[str, Any]:
    """Train ``config.arch`` on DATA/train, select the epoch with the best validation AUC, report test metrics.

    ``config``: a :class:`ClassifierTrainConfig` (default: its defaults); keyword ``options`` set or
    override its fields (``train_classifier(data, out, arch="resnet-small", epochs=30)``). ``resume``:
    continue RUN's latest checkpoint (the same weights as an uninterrupted run on CPU; only ``epochs``
    may change). Returns a dict with the test metrics, the best epoch and validation AUC, and timing.
    """
    cfg = replace_fields(config or ClassifierTrainConfig(), "train_classifier option", **options).check()
    dev = pick_device(device)
    size = cfg.size or DEFAULT_SIZE.get(cfg.arch, 64)
    run = TrainingRun(out, CLASSIFIER_KIND)
    run.check_start(resume)  # the directory half of the policy, before loading data
    # a training batch holds about 20 full-size float maps per image (stem activations kept for backward)
    check_image_memory("size", size, arrays=20 * cfg.batch_size + 64, channels=cfg.channels or 1,
                       what=f"to train {cfg.arch} on batches of {cfg.batch_size}")
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    splits = _load_splits(data, cfg, size)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (ds.tensors()[:2] for ds in splits)
    channels = splits[0].channels
    settings = dict(data=fingerprint_state_dict({"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}),
                    arch=cfg.arch, size=size, channels=channels, seed=cfg.seed, batch_size=cfg.batch_size, lr=cfg.lr,
                    weight_decay=cfg.weight_decay, augment=cfg.augment, epochs=cfg.epochs)
    run.open(resume, settings, may_change=("epochs",))

    model = build_architecture(cfg.arch, in_channels=channels, image_size=size).to(dev)
    pp = Preprocessing(input_size=(size, size), input_channels=channels)
    trainer = ClassifierTrainer(model, pp, x_train, y_train, x_val, y_val, batch_size=cfg.batch_size, lr=cfg.lr,
                                weight_decay=cfg.weight_decay, seed=cfg.seed, augment=cfg.augment, device=dev)
    names = getattr(splits[0], "class_names", None) or {"positive": cfg.positive, "negative": cfg.negative}
    run.begin(dict(
        arch=cfg.arch, arch_kwargs={"in_channels": channels, "image_size": size},
        adapter={"output": "logits2", "positive_index": 1, "preprocessing": pp.to_dict()},
        data=str(data), classes={"positive": names.get("positive"), "negative": names.get("negative")},
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed, augment=cfg.augment,
        n_train=len(splits[0]), n_val=len(splits[1]), n_test=len(splits[2]), train_config=cfg.to_dict(),
    ))
    loop = run.train(trainer, LoopOptions(total=cfg.epochs, cadence=Cadence(log_every=1, ckpt_every=1, keep_last=1),
                                          max_minutes=cfg.max_minutes, desc=f"train {cfg.arch}", quiet=quiet, device=dev, unit="epoch",
                                          postfix=lambda r: f"loss={r['train_loss']:.3f} val_auc={r['val_auc']:.3f}"))
    best = trainer.best

    model.load_state_dict(best["state"])
    model.eval()
    adapter = ClassifierAdapter(model, output="logits2", preprocessing=pp)
    test = binary_metrics(predict_probs(adapter, x_test, device=dev), y_test.numpy())
    result = {"test": test, "best_epoch": best["epoch"], "best_val_auc": best["auc"], "train_seconds": time.perf_counter() - t0,
              "fingerprint": fingerprint_module(model)}
    nothing = learned_nothing(out, roc_auc(predict_probs(adapter, x_val, device=dev), y_val.numpy()))
    if nothing:
        result["warnings"] = [nothing]
    atomic_write_json(Path(out) / "test_metrics.json", result)
    run.finish(loop, weights={WEIGHTS_NAME: model}, metrics={"test": test, "best_epoch": best["epoch"], "best_val_auc": best["auc"]},
               record={"fingerprint": result["fingerprint"], "best_epoch": best["epoch"], "best_val_auc": best["auc"], "test": test,
                       "epochs_done": loop.step, **({"warnings": [nothing]} if nothing else {})})
    return result


def _load_splits(data: str | os.PathLike, cfg: ClassifierTrainConfig, size: int) -> tuple[Any, Any, Any]:
    """The train, val and test splits at ``size`` (val and test converted to the channels of train)."""
    kw = dict(size=size, channels=cfg.channels, positive=cfg.positive, negative=cfg.negative, csv=cfg.csv, skip_bad=cfg.skip_bad)
    train_ds = load_dataset(data, split="train", **kw)
    kw["channels"] = train_ds.channels
    return train_ds, load_dataset(data, split="val", **kw), load_dataset(data, split="test", **kw)


def learned_nothing(out: str | os.PathLike, val_auc: float) -> str | None:
    """The warning (issued, and returned to be recorded in config.json) for a trained classifier whose
    validation AUC is no better than chance (<= 0.5: e.g. one output for every image); None otherwise."""
    import warnings

    if not np.isfinite(val_auc) or val_auc > 0.5:  # NaN: a one-class validation split, reported elsewhere
        return None
    text = (f"classifier {out}: validation AUC {val_auc:.3f} at the end of training, no better than chance: it learned "
            "nothing, and every explanation built on it would be meaningless; check the labels (--positive/--negative), "
            "the image size (--size) and the number of epochs")
    warnings.warn(text, stacklevel=3)
    return text


def format_test_report(result: dict[str, Any]) -> str:
    t = result["test"]
    (tn, fp), (fn, tp) = t["confusion_matrix"]
    return (
        f"test: n={t['n']} accuracy={t['accuracy']:.3f} AUC={t['auc']:.4f} sensitivity={t['sensitivity']:.3f} "
        f"specificity={t['specificity']:.3f}\nconfusion matrix (rows truth neg/pos, cols predicted neg/pos): "
        f"[[{tn}, {fp}], [{fn}, {tp}]]\nbest epoch {result['best_epoch']} (val AUC {result['best_val_auc']:.4f}); "
        f"{result['train_seconds']:.1f} s"
    )
