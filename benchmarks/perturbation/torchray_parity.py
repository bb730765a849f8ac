"""Our Extremal Perturbation against TorchRay's, on a small network (the reference check of explain/perturbation.py).

TorchRay is not a dependency (it installs torchvision, pycocotools and pymongo; no release since 2020), but its
``torchray/attribution/extremal_perturbation.py`` needs only torch, numpy, matplotlib and PIL. So this script runs it
from the unpacked sdist, without installing anything:

    pip download torchray==1.0.0.2 --no-deps -d DIR && tar xzf DIR/torchray-1.0.0.2.tar.gz -C DIR
    python benchmarks/perturbation/torchray_parity.py --torchray-src DIR/torchray-1.0.0.2 [--json out.json]

A seeded random CNN with two outputs on seeded 32 px images; both implementations get the same settings (blur
perturbation, preservation game, TorchRay's 800-iteration schedule, step / sigma / max blur given explicitly, jitter
off and on) and explain output 1. Reported: the largest absolute difference between the two masks, and the final
reward (the explained output on the perturbed image) of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from medxgan.explain.perturbation import ExtremalPerturbationExplainer


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 2))

    def forward(self, x):
        return self.f(x)


class Output1(nn.Module):
    """Our explainers' classifier interface over output 1 of the network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def logit(self, x):
        return self.net(x)[:, 1]

    def prob(self, x):
        return torch.sigmoid(self.logit(x))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torchray-src", type=Path, required=True, help="the unpacked torchray sdist (holds torchray/)")
    ap.add_argument("--iters", type=int, default=800)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    sys.path.insert(0, str(a.torchray_src))
    from torchray.attribution.extremal_perturbation import extremal_perturbation  # the reference

    net = TinyNet().eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    rows = []
    for jitter in (False, True):
        for area in (0.05, 0.2):
            for i in range(len(images)):
                x = images[i : i + 1]
                t0 = time.perf_counter()
                ref, _ = extremal_perturbation(net, x, 1, areas=[area], max_iter=a.iters, step=2, sigma=4, jitter=jitter)
                t_ref = time.perf_counter() - t0
                for p in net.parameters():  # TorchRay switches gradients off for good
                    p.requires_grad_(True)
                ours_ex = ExtremalPerturbationExplainer(Output1(net), areas=(area,), max_iter=a.iters, step=2, sigma=4.0,
                                                        max_blur=20.0, jitter=jitter, regul_growth=1.0035)
                t0 = time.perf_counter()
                ours = ours_ex.explain(x).extras["masks"][:, :1]
                t_ours = time.perf_counter() - t0
                row = dict(image=i, area=area, jitter=jitter, max_abs_diff=round(float((ours - ref).abs().max()), 6),
                           mean_abs_diff=round(float((ours - ref).abs().mean()), 6),
                           area_ref=round(float((ref > 0.5).float().mean()), 4), area_ours=round(float((ours > 0.5).float().mean()), 4),
                           s_ref=round(t_ref, 2), s_ours=round(t_ours, 2))
                print(json.dumps(row), flush=True)
                rows.append(row)
    if a.json:
        a.json.write_text(json.dumps({"iters": a.iters, "rows": rows, "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
