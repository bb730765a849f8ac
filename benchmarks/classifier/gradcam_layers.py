"""Grad-CAM's layer on a MONAI ResNet (issue 28): the automatic choice (the last block's output, `layer4`)
against the earlier rule's choice (the last Conv2d extended over BN/ReLU: `layer4.0.downsample.1`, a
BatchNorm on the shortcut) and `layer3`, scored by `medxgan evaluate` (IoU with the lesion mask, area
matched) on brain phantoms.

The classifier is what a MONAI user brings: a 2-D `monai.networks.nets.ResNet` with 3 input channels
and ImageNet normalisation of [0, 1] inputs at its own size (the adapter resizes and repeats the gray
channel), trained briefly here (seeded) on the phantoms' train split.

    OMP_NUM_THREADS=1 python benchmarks/classifier/gradcam_layers.py OUT [--epochs 10]   # ~10 min on a busy 2-core CPU

Writes OUT/gradcam_layers.json and prints one line per layer.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medxgan.classifiers import Preprocessing, wrap_classifier
from medxgan.classifiers.architectures import gradcam_layer
from medxgan.data import load_dataset
from medxgan.data.phantoms import synthesize
from medxgan.evaluate.runner import evaluate

MEAN, STD, PX = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 96


def train_monai_resnet(data: Path, epochs: int, seed: int = 0) -> torch.nn.Module:
    from monai.networks.nets import ResNet

    torch.manual_seed(seed)
    model = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=2, n_input_channels=3, num_classes=2)
    pp = Preprocessing(input_size=(PX, PX), input_channels=3, input_range="0,1", mean=MEAN, std=STD)
    pre = wrap_classifier(torch.nn.Identity(), output="logits2", preprocessing=pp)  # the adapter's resize/channels/normalisation alone
    x, y, _, _ = load_dataset(data, split="train", size=64).tensors()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            inp = pre.preprocess(x[idx])
            loss = F.cross_entropy(model(inp), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()
    adapter = wrap_classifier(model, output="logits2", preprocessing=pp)
    xt, yt, _, _ = load_dataset(data, split="test", size=64).tensors()
    with torch.no_grad():
        acc = float(((adapter.prob(xt) >= 0.5).long() == yt).float().mean())
    print(f"test accuracy {acc:.3f}", flush=True)
    adapter.test_accuracy = acc
    return adapter


def main(out: Path, epochs: int = 10) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "brain"
    t0 = time.time()
    if not (data / "dataset.json").is_file():
        synthesize("brain-mri", data, n=800, size=64, seed=0, show_progress=False)
    adapter = train_monai_resnet(data, epochs=epochs)
    earlier = next(n for n, m in adapter.model.named_modules() if m is gradcam_layer(adapter.model))
    rows = {}
    for label, layer in (("automatic", None), ("earlier rule", earlier), ("layer3", "layer3")):
        res = evaluate(data, out / f"eval-{label.replace(' ', '-')}", classifier=adapter, methods=["gradcam"], n=60, subset="tp",
                       noise_sigmas=[], max_sensitivity=False, save_maps=False, device="cpu", show_progress=False, overwrite=True,
                       gradcam_layer=layer)
        iou = res["methods"]["gradcam"]["metrics"]["localisation.iou_area_matched"]
        pointing = res["methods"]["gradcam"]["metrics"]["localisation.pointing_game"]
        rows[label] = {"layer": res["config"]["gradcam_layer"], "iou_area_matched": iou, "pointing_game": pointing}
        print(f"{label:13s} {res['config']['gradcam_layer']:24s} IoU {iou['mean']:.3f} [{iou['lo']:.3f}, {iou['hi']:.3f}]  "
              f"pointing {pointing['mean']:.3f}  (n {iou['n']})", flush=True)
    record = {"test_accuracy": adapter.test_accuracy, "epochs": epochs, "rows": rows, "wall_s": round(time.time() - t0, 1),
              "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    (out / "gradcam_layers.json").write_text(json.dumps(record, indent=2))
    print(f"written {out / 'gradcam_layers.json'} ({record['wall_s']} s)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="work folder: phantoms, the MONAI classifier, the evaluations and gradcam_layers.json")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the classifier's brief training (default 10)")
    args = ap.parse_args()
    main(args.out, args.epochs)
