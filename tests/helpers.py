"""Test helpers shared between test modules (tests import this module, never each other)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from medxgan.classifiers import ClassifierAdapter, wrap_classifier
from medxgan.gan.networks import Generator, build_generator
from medxgan.gan.presets import NetConfig, get_preset
from medxgan.gan.run import GAN_KIND, GENERATOR_NAME
from medxgan.runtime.runs import RunDir

NZ1, NZ2, SIZE = 8, 4, 16


def tiny_generator(channels: int = 1, seed: int = 0) -> Generator:
    """A random 16 px DCGAN generator whose BatchNorm running statistics are calibrated on random codes
    (fresh running stats make the output almost constant)."""
    torch.manual_seed(seed)
    g = Generator(NetConfig(arch="dcgan", size=SIZE, channels=channels, nz1=NZ1, nz2=NZ2, g_width=8))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    g.train()
    with torch.no_grad():
        for _ in range(4):
            g(torch.randn(64, NZ1), torch.randn(64, NZ2))
    return g.eval()


def tiny_classifier(generator: Generator, steps: int = 40, seed: int = 0) -> ClassifierAdapter:
    """A tiny CNN trained for a few steps to tell G(z1, 0) (negative) from G(z1, z2) (positive)."""
    torch.manual_seed(seed)
    c = generator.channels
    net = nn.Sequential(nn.Conv2d(c, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        z1 = torch.randn(32, NZ1)
        z2 = torch.randn(32, NZ2) * (torch.arange(32) % 2).view(-1, 1)
        with torch.no_grad():
            x = generator(z1, z2)
        y = (torch.arange(32) % 2).float()
        loss = nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ClassifierAdapter(net, output="logit1")


@functools.lru_cache(maxsize=2)
def tiny_models(channels: int = 1) -> tuple[Generator, ClassifierAdapter]:
    g = tiny_generator(channels)
    return g, tiny_classifier(g)


def known_images(n: int = 3, seed: int = 1, channels: int = 1):
    g, _ = tiny_models(channels)
    gen = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, NZ1, generator=gen), torch.randn(n, NZ2, generator=gen)
    with torch.no_grad():
        return g(z1, z2), z1, z2


def write_dataset(root, n_per_class=8, size=64):
    """A tiny two-class PNG data set in the project layout (train/val/test, a bright square = positive)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_per_class), ("val", 4), ("test", 4)):
        for cls in ("negative", "positive"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((size, size)) * 60 + 20).astype(np.uint8)
                if cls == "positive":
                    a[20:30, 20:30] = 230
                Image.fromarray(a).save(d / f"{i:03d}.png")
    (root / "dataset.json").write_text(json.dumps({"positive": ["positive"], "negative": ["negative"]}))


def cli_runs(root: Path, *, epochs: int, steps: int, gan_args: tuple[str, ...] = ()) -> Path:
    """Tiny runs made through the CLI: ROOT/data (write_dataset, 4 images per class), a classifier run ROOT/clf of
    ``epochs`` epochs and a fast-preset GAN run ROOT/gan (no oracle) of ``steps`` steps, plus ``gan_args``."""
    from medxgan.cli import main

    write_dataset(root / "data", n_per_class=4, size=64)
    assert main(["train-classifier", str(root / "data"), "--out", str(root / "clf"), "--epochs", str(epochs), "--batch-size", "4",
                 "--no-augment"]) == 0
    assert main(["train", str(root / "data"), "--classifier", str(root / "clf"), "--out", str(root / "gan"), "--preset", "fast",
                 "--steps", str(steps), "--batch-size", "4", "--no-oracle", "--monitor-samples", "2", *gan_args, "--quiet"]) == 0
    return root


EVAL_SIZE = 32  # the evaluation/report tests' images


def tiny_eval_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        m[-1].bias.fill_(4.0)  # everything predicted positive: positives are TP, negatives FP
    return m


def tiny_eval_clf() -> ClassifierAdapter:
    return ClassifierAdapter(tiny_eval_model(), output="logit1", name="tiny")


def png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def make_eval_data(root, n_pos=3, n_neg=2, marker_on=(0,), nan_pixel=None, markers=True):
    """Test-split PNGs with exact lesion masks (a bright square per positive) and, with ``markers``,
    shortcut-marker masks (a white corner on the positives in ``marker_on``); ``nan_pixel``: the image
    whose top-left pixel is white (NaNOnMarked's trigger)."""
    rng = np.random.default_rng(0)
    for k in range(n_pos + n_neg):
        pos = k < n_pos
        cls = "positive" if pos else "negative"
        img = rng.integers(40, 90, size=(EVAL_SIZE, EVAL_SIZE)).astype(np.float64)
        mask = np.zeros((EVAL_SIZE, EVAL_SIZE), dtype=np.uint8)
        marker = np.zeros((EVAL_SIZE, EVAL_SIZE), dtype=np.uint8)
        if pos:
            r, c = 8 + 4 * k, 10 + 3 * k
            mask[r : r + 6, c : c + 6] = 255
            img[mask > 0] = 220
            if k in marker_on:
                marker[0:3, 0:3] = 255
                img[marker > 0] = 255
        img[0, 0] = 255 if (nan_pixel is not None and k == nan_pixel) else 60
        name = f"{cls[:3]}{k}.png"
        png(root / "test" / cls / name, img)
        png(root / "masks" / "test" / cls / name, mask)
        if markers:
            png(root / "markers" / "test" / cls / name, marker)
    (root / "dataset.json").write_text(json.dumps({"positive": ["positive"], "negative": ["negative"]}))
    return root


def strip_cost(methods):
    return {m: {k: v for k, v in r["metrics"].items() if not k.startswith("cost.")} for m, r in methods.items()}


def write_gan_run(root):
    """A GAN run directory in `medxgan train`'s format: config.json (kind, net, classifier record) +
    generator.safetensors in ``root/run``; the classifier is a TorchScript file recorded as the run's source."""
    g, clf = tiny_models()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ts = root / "clf.pt"
    torch.jit.save(torch.jit.script(clf.model), str(ts))
    rd = RunDir(root / "run")
    rd.write_config(GAN_KIND, net=g.config.to_dict(), classifier={"source": str(ts), "adapter": {"output": "logit1", "positive_index": 1, "preprocessing": {}}})
    rd.save_weights(GENERATOR_NAME, g)
    return rd.path


def write_png(path, array):
    Image.fromarray(array).save(path)
    return path


def square_lesion_data(n: int = 32, size: int = 32, channels: int = 1, seed: int = 0):
    """(images N x C x size x size in [-1, 1], labels): dark noise, positives with a bright square "lesion"."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g) * 0.4 - 0.8
    y = torch.arange(n) % 2
    x[y == 1, :, size // 4 : size // 2, size // 4 : size // 2] = 0.9
    return x, y


def small_conv_classifier(channels: int = 1, seed: int = 0) -> ClassifierAdapter:
    """An untrained 2-logit CNN (seeded) for training-loop tests."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(channels, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 2))
    return ClassifierAdapter(m, output="logits2")


def one_error_line(capsys) -> str:
    """The stderr of a failed command: no traceback, exactly one error line (warnings, one line each, allowed)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and all(ln in errors or ln.startswith("medxgan: warning:") for ln in lines), err
    return errors[0]


def snapshot_files(root) -> dict:
    """Every file under ``root`` (relative path -> bytes): compare before/after to prove nothing was touched."""
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def masked_setup():
    """A random 16 px masked generator (pathology mask: its counterfactuals are residual in-fills), a small random
    classifier and two random images: (G, classifier, x), seeded."""
    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, size=16, pathology="mask", nz1=8, nz2=4, g_width=8).net).eval()
    clf = wrap_classifier(nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 64, 1)), output="logit1")
    return G, clf, torch.rand(2, 1, 16, 16) * 2 - 1
