"""Amortising the minimal mask (issue 32): a small network predicts the minimal-mask search's result in one pass, then
a few refinement steps; against the default search (150 Adam steps from the generator's mask) on the same inversions.

    OMP_NUM_THREADS=1 python benchmarks/performance/mask_net_probe.py --gan GAN_RUN --data DATA [--n 30] \\
        [--train-steps 400] [--max-minutes 10] [--refine 0 10 25 50] [--name mask_net_probe]

Training (amortised optimisation, no per-scan search needed): the network sees (x, B, gM, x - B) -- the scan, the
generator's anatomy in-fill and its pathology mask -- and outputs a correction to the logits of gM on the search's
coarse grid (its last layer starts at zero, so it starts at the generator's mask). Its loss is the search's own
objective (``minimal_mask.mask_objective``: relu(f(x + M (B - x)) - t) + area + TV, the same target t and weights), on
the training split's positives with the codes of the run's anchor encoder (one pass, no inversion), Adam 1e-3,
batch 16. The classifier and the generator stay frozen.

Test: the classifier's true positives of the test split with a lesion mask (evaluate's selection, seed 0), inverted
with the run's schedule (no minimal mask), then per batch of 8 in turn: the default search; the network alone; the
network + K refinement steps (``refine_mask(start=...)``, lr 0.1 and 0.2); and, for comparison, K steps from the
generator's mask without the network. Quality as in ``stage_cost.py`` (area-matched IoU and pointing of |x - x_cf|,
validity for the classifier and the oracle, twin gain); seconds per image of the mask stage only (the inversion is
the same for every row). Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402
from stage_cost import cf_quality, map_quality  # noqa: E402

from medxgan.data import load_dataset  # noqa: E402
from medxgan.evaluate.selection import select_images  # noqa: E402
from medxgan.explain import CounterfactualEngine, difference_maps  # noqa: E402
from medxgan.explain.counterfactual import MinimalMaskConfig  # noqa: E402
from medxgan.explain.minimal_mask import mask_objective, refine_mask, target_logits  # noqa: E402
from medxgan.pipeline import MedXGAN  # noqa: E402
from medxgan.runtime.tensors import frozen  # noqa: E402


class MaskNet(nn.Module):
    """(x, B, gM, x - B) at full resolution -> mask logits on the grid ``scale`` times coarser (gM's logits + a correction)."""

    def __init__(self, channels: int, scale: int, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3 * channels + 1, width, 3, padding=1), nn.ReLU()]
        c, s = width, 1
        while s < scale:
            layers += [nn.Conv2d(c, 2 * width, 3, stride=2, padding=1), nn.ReLU()]
            c, s = 2 * width, s * 2
        layers += [nn.Conv2d(c, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 1, 3, padding=1)]
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net, self.scale = nn.Sequential(*layers), scale

    def forward(self, x: torch.Tensor, fill: torch.Tensor, gm: torch.Tensor) -> torch.Tensor:
        grid = gm if self.scale <= 1 else F.avg_pool2d(gm, self.scale)
        return torch.logit(grid.clamp(1e-3, 1 - 1e-3)) + self.net(torch.cat([x, fill, gm, x - fill], 1))

    def mask(self, x: torch.Tensor, fill: torch.Tensor, gm: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.sigmoid(self(x, fill, gm)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def parts(mx: Any, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        _, base, gm = mx.generator(z1, z2, return_parts=True)
    return base, gm


def train_net(mx: Any, data: str, args: argparse.Namespace) -> tuple[MaskNet, dict[str, Any]]:
    clf, m = mx.classifier, mx.engine.minimal_mask
    ds = load_dataset(data, split="train", size=mx.size, channels=mx.channels)
    idx = [i for i in range(len(ds)) if int(ds[i]["label"]) == 1][: args.train_images]
    x = torch.stack([ds[i]["image"] for i in idx])
    enc = mx.engine.encoder.eval()
    with torch.no_grad():
        z1, _, z2, _ = enc(x)
    base, gm = parts(mx, z1, z2)
    target = target_logits(clf, x, base, gm, m.effective_floor)
    net = MaskNet(mx.channels, m.scale)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    log, t0 = [], time.perf_counter()
    with frozen(clf), torch.enable_grad():
        for step in range(args.train_steps):
            b = torch.randint(0, x.shape[0], (16,), generator=g)
            mk = F.interpolate(torch.sigmoid(net(x[b], base[b], gm[b])), size=x.shape[-2:], mode="bilinear", align_corners=False)
            loss = mask_objective(clf, x[b], base[b], mk, target[b], float(m.area), float(m.tv)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 25 == 0:
                log.append({"step": step, "loss": float(loss.detach()), "s": time.perf_counter() - t0})
                print(f"train step {step} loss {float(loss.detach()):.4f} {time.perf_counter() - t0:.0f} s", flush=True)
            if time.perf_counter() - t0 > 60 * args.max_minutes:
                break
    return net.eval(), {"train_images": int(x.shape[0]), "steps": step + 1, "seconds": time.perf_counter() - t0, "log": log}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 10, 25, 50])
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    mx = MedXGAN.load(args.gan, device="cpu", steps=75, restarts=1)
    clf, m = mx.classifier, mx.engine.minimal_mask
    net, train_info = train_net(mx, args.data, args)

    ds = load_dataset(args.data, split="test", size=mx.size, channels=mx.channels)
    sel = select_images(ds, clf, torch.device("cpu"), Path(args.data), split="test", subset="tp", n=None, seed=0)
    keep = [i for i in sel.selected if bool(sel.has_mask[i]) and bool(sel.masks[i].gt(0.5).any())][: args.n]
    x_all, lesion_all = sel.images[keep], sel.masks[keep]
    twins_all = sel.twins[keep] if sel.twins is not None and bool(sel.has_twin[keep].all()) else None
    inv = CounterfactualEngine(mx.generator, clf, inversion=mx.engine.inversion_config, minimal_mask=MinimalMaskConfig(steps=0),
                               encoder=mx.engine.encoder)
    kw = dict(w_area=float(m.area), w_tv=float(m.tv), scale=m.scale, floor=m.effective_floor)
    rows: dict[str, list[dict[str, float]]] = {}
    secs: dict[str, float] = {}
    for lo in range(0, x_all.shape[0], args.batch):
        x, lesion = x_all[lo : lo + args.batch], lesion_all[lo : lo + args.batch]
        twins = None if twins_all is None else twins_all[lo : lo + args.batch]
        cf = inv.counterfactuals(x)
        base, gm = parts(mx, cf.z1, cf.z2)

        def variant(name: str, fn: Any) -> None:
            t0 = time.perf_counter()
            mk = fn()
            secs[name] = secs.get(name, 0.0) + time.perf_counter() - t0
            x_cf = x + mk * (base - x)
            rows.setdefault(name, []).extend({**q, **c} for q, c in zip(map_quality(difference_maps(x, x_cf)[0], lesion),
                                                                         cf_quality(x, x_cf, clf, mx.oracle, twins)))

        variant("default_150", lambda: refine_mask(clf, x, base, gm, steps=m.steps, **kw))
        for k in args.refine:
            for lr in ((0.1,) if k == 0 else (0.1, 0.2)):
                def with_net(k: int = k, lr: float = lr) -> torch.Tensor:
                    with torch.no_grad():
                        start = torch.sigmoid(net(x, base, gm))
                    return refine_mask(clf, x, base, gm, steps=k, lr=lr, start=start, **kw)
                variant(f"net+{k}_lr{lr:g}", with_net)
                if k:
                    variant(f"gm+{k}_lr{lr:g}", lambda k=k, lr=lr: refine_mask(clf, x, base, gm, steps=k, lr=lr, **kw))
        print(f"batch {lo // args.batch + 1} done", flush=True)
    n = x_all.shape[0]
    base_rows = rows["default_150"]
    out = {}
    for name, r in rows.items():
        q = {k: float(np.nanmean([v[k] for v in r])) for k in r[0]}
        q.update({f"delta_{k}": float(np.nanmean([v[k] - b[k] for v, b in zip(r, base_rows)])) for k in ("iou_area_matched", "twin_gain_db")})
        out[name] = {"mask_seconds_per_image": secs[name] / n, **q}
        print(f"{name:16s} {secs[name] / n:.3f} s/img  IoU {q['iou_area_matched']:.3f} (d {q['delta_iou_area_matched']:+.3f})  "
              f"valid {q['valid_classifier']:.2f}/{q['valid_oracle']:.2f}  twin {q['twin_gain_db']:+.2f} dB (d {q['delta_twin_gain_db']:+.2f})")
    if args.name:
        print(write_result(args.name, {"machine": machine(), "gan": args.gan, "data": args.data, "n_images": n, "train": train_info,
                                       "minimal_mask": m.flat(changed_only=False), "variants": out}))


if __name__ == "__main__":
    main()
