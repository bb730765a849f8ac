"""`medxgan train-classifier`: train a built-in binary classifier on a dataset in the project layout.

Model selection on validation AUC; test metrics (accuracy, AUC, sensitivity, specificity, confusion
matrix) written to the run directory and returned. Checkpoint after every epoch; `resume=True`
continues an interrupted run exactly.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing
from medxgan.classifiers.architectures import build_architecture
from medxgan.classifiers.augment import augment_batch
from medxgan.classifiers.loading import CLASSIFIER_KIND, WEIGHTS_NAME
from medxgan.runtime.atomic import atomic_write_json
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.progress import progress
from medxgan.runtime.ranking import roc_auc
from medxgan.runtime.runs import RunDir, fingerprint_module
from medxgan.runtime.seeding import get_rng_state, seed_everything, set_rng_state

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


def train_classifier(
    data: str | os.PathLike,
    out: str | os.PathLike,
    arch: str = "paper-cnn",
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    size: int | None = None,
    channels: int | None = None,
    positive: list[str] | None = None,
    negative: list[str] | None = None,
    csv: str | os.PathLike | None = None,
    augment: bool = True,
    device: str = "auto",
    resume: bool = False,
    skip_bad: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train `arch` on DATA/train, select the epoch with the best validation AUC, report test metrics.

    Returns a dict with the test metrics, the best epoch and validation AUC, and timing.
    """
    from medxgan.data import load_dataset  # data layer is below classifiers; imported here to keep import light

    if epochs < 1:
        raise MedxganError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 2:
        raise MedxganError(f"--batch-size {batch_size}: must be at least 2")
    dev = pick_device(device)
    size = size or DEFAULT_SIZE.get(arch, 64)
    run = RunDir(out)
    if run.exists() and not resume:
        cfg = run.read_config()
        if cfg.get("status") == "finished":
            raise MedxganError(f"--out {out}: already holds a finished classifier run (choose another directory)")
    seed_everything(seed)
    t0 = time.perf_counter()
    kw = dict(size=size, channels=channels, positive=positive, negative=negative, csv=csv, skip_bad=skip_bad)
    train_ds = load_dataset(data, split="train", **kw)
    channels = train_ds.channels
    kw["channels"] = channels
    val_ds = load_dataset(data, split="val", **kw)
    test_ds = load_dataset(data, split="test", **kw)
    x_train, y_train, _, _ = train_ds.tensors()
    x_val, y_val, _, _ = val_ds.tensors()
    x_test, y_test, _, _ = test_ds.tensors()

    model = build_architecture(arch, in_channels=channels, image_size=size).to(dev)
    optim = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sampler = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    pp = Preprocessing(input_size=(size, size), input_channels=channels)
    config = dict(
        arch=arch,
        arch_kwargs={"in_channels": channels, "image_size": size},
        adapter={"output": "logits2", "positive_index": 1, "preprocessing": pp.to_dict()},
        data=str(data),
        classes={"positive": train_ds.class_names.get("positive") if hasattr(train_ds, "class_names") else positive,
                 "negative": train_ds.class_names.get("negative") if hasattr(train_ds, "class_names") else negative},
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, augment=augment,
        n_train=len(train_ds), n_val=len(val_ds), n_test=len(test_ds), status="running",
    )
    start_epoch, best = 0, {"auc": -1.0, "epoch": -1, "state": None}
    if resume and run.latest_checkpoint() is not None:
        st = run.load_checkpoint()
        model.load_state_dict(st["model"])
        optim.load_state_dict(st["optim"])
        sampler.set_state(st["sampler"])
        aug_gen.set_state(st["aug_gen"])
        set_rng_state(st["rng"])
        start_epoch = int(st["step"])
        best = {"auc": float(st["best_auc"]), "epoch": int(st["best_epoch"]), "state": st["best_state"]}
        run.truncate_metrics(start_epoch)
    else:
        run.write_config(CLASSIFIER_KIND, **config)
    if start_epoch == 0:
        run.truncate_metrics(0)

    n = len(x_train)
    steps_per_epoch = max(1, n // batch_size)
    bar = progress(total=(epochs - start_epoch) * steps_per_epoch, desc=f"train {arch}", disable=quiet or None)
    for epoch in range(start_epoch, epochs):
        model.train()
        perm = torch.randperm(n, generator=sampler)
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if augment:
                xb = augment_batch(xb, aug_gen)
            logits = model(xb.to(dev))
            loss = F.cross_entropy(logits, yb.to(dev))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(loss.item())
            bar.update(1)
        model.eval()
        adapter = ClassifierAdapter(copy.deepcopy(model), output="logits2", preprocessing=pp)
        val_probs = predict_probs(adapter, x_val, device=dev)
        val = binary_metrics(val_probs, y_val.numpy())
        val_auc = val["auc"] if np.isfinite(val["auc"]) else val["accuracy"]
        improved = val_auc > best["auc"]
        if improved:
            best = {"auc": float(val_auc), "epoch": epoch + 1, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        record = {"step": epoch + 1, "epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_auc": val["auc"], "val_accuracy": val["accuracy"], "best": improved}
        run.log_metrics(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_auc=f"{val['auc']:.3f}")
        run.save_checkpoint(
            epoch + 1,
            {"model": model.state_dict(), "optim": optim.state_dict(), "sampler": sampler.get_state(), "aug_gen": aug_gen.get_state(),
             "rng": get_rng_state(), "best_auc": best["auc"], "best_epoch": best["epoch"], "best_state": best["state"]},
            keep_last=1,
        )
    bar.close()

    model.load_state_dict(best["state"])
    model.eval()
    run.save_weights(WEIGHTS_NAME, model)
    adapter = ClassifierAdapter(model, output="logits2", preprocessing=pp)
    test = binary_metrics(predict_probs(adapter, x_test, device=dev), y_test.numpy())
    result = {"test": test, "best_epoch": best["epoch"], "best_val_auc": best["auc"], "train_seconds": time.perf_counter() - t0,
              "fingerprint": fingerprint_module(model)}
    atomic_write_json(Path(out) / "test_metrics.json", result)
    run.write_config(CLASSIFIER_KIND, **{**config, "status": "finished", "fingerprint": result["fingerprint"],
                                          "best_epoch": best["epoch"], "best_val_auc": best["auc"], "test": test})
    return result


def format_test_report(result: dict[str, Any]) -> str:
    t = result["test"]
    (tn, fp), (fn, tp) = t["confusion_matrix"]
    return (
        f"test: n={t['n']} accuracy={t['accuracy']:.3f} AUC={t['auc']:.4f} sensitivity={t['sensitivity']:.3f} "
        f"specificity={t['specificity']:.3f}\nconfusion matrix (rows truth neg/pos, cols predicted neg/pos): "
        f"[[{tn}, {fp}], [{fn}, {tp}]]\nbest epoch {result['best_epoch']} (val AUC {result['best_val_auc']:.4f}); "
        f"{result['train_seconds']:.1f} s"
    )
