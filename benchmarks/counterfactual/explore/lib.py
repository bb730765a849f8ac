"""Shared by the exploration scripts of 2026-12-06 (eighth session): one demo's 30 inverted positives (from
``cache.py``) with its classifier, oracle and generator, and the scores mask_grid.py records."""
import sys, torch, numpy as np, json
import torch.nn.functional as F
from pathlib import Path
from medxgan.explain.model import MedXGANModel
from medxgan.explain.minimal_mask import total_variation, refine_mask, target_logits
from medxgan.explain.counterfactual import MaskPath
from medxgan.explain.lig import latent_integrated_gradients
from medxgan.evaluate.localisation import iou_area_matched, pointing_game
from medxgan.gan.inversion import psnr
from medxgan.runtime.tensors import frozen


def cli(doc, n_args):
    """The scripts' command line: their docstring for -h/--help (exit 0), a one-line usage error (exit 2) when fewer
    than ``n_args`` positional arguments are given; the arguments (sys.argv[1:]) otherwise."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc.strip()); sys.exit(0)
    if len([a for a in args if not a.startswith("--")]) < n_args:
        print("usage:" + doc.rsplit("python", 1)[-1].rstrip('"').rstrip(), file=sys.stderr); sys.exit(2)
    return args


def upsample_mask(mask_logits, size):
    """sigmoid, then bilinear to ``size``: how the library turns a coarse mask's logits into the mask (the same two
    lines as medxgan.explain.minimal_mask's private helper; kept here so the scripts use no private name)."""
    m = torch.sigmoid(mask_logits)
    return m if tuple(m.shape[-2:]) == tuple(size) else F.interpolate(m, size=size, mode="bilinear", align_corners=False)

class Ctx:
    def __init__(self, demo, cache):
        d = torch.load(cache)
        self.__dict__.update(d)
        mx = MedXGANModel.load(Path(demo) / "gan", device="cpu")
        self.clf, self.orc, self.G = mx.classifier, mx.oracle, mx.engine.generator
        self.floor = self.ref["negative_logit_q05"]
        self.has = self.m.flatten(1).amax(1) > 0.5
    def mean(self, fn, maps):
        idx = self.has.nonzero().flatten().tolist()
        return round(float(np.mean([fn(maps[i, 0].abs().numpy(), self.m[i, 0].numpy() > 0.5) for i in idx])), 3)
    def default_mask(self):
        """The library's minimal mask (the default preset: 150 steps, w_area 1, w_tv 4, q05 floor, grid 4x coarser)."""
        return refine_mask(self.clf, self.x, self.B, self.gm, steps=150, w_area=1.0, w_tv=4.0, floor=self.floor, scale=4)

    def score(self, M, fill=None, lig=True, **extra):
        x = self.x; fill = self.B if fill is None else fill
        x_cf = x + M * (fill - x)
        diff = M * (x - fill).abs().mean(1, keepdim=True)
        row = dict(extra)
        row["diff"] = self.mean(iou_area_matched, diff)
        if lig:
            paths = [MaskPath(self.G, x[i], self.z2[i], M[i]) for i in range(len(x))]
            L = latent_integrated_gradients(paths, self.clf, self.z1, self.z2).maps
            row["lig"] = self.mean(iou_area_matched, L); row["lig_pg"] = self.mean(pointing_game, L)
        row["diff_pg"] = self.mean(pointing_game, diff)
        with torch.no_grad():
            row["v_clf"] = round(float((self.clf.prob(x_cf) < 0.5).float().mean()), 3)
            row["v_orc"] = round(float((self.orc.prob(x_cf) < 0.5).float().mean()), 3)
            row["gain"] = round(float((psnr(x_cf, self.tw) - psnr(x, self.tw))[self.has].mean()), 2)
        Mb = (M > 0.5).float(); les = (self.m > 0.5).float()
        row["cover"] = round(float(((Mb * les).flatten(1).sum(1) / les.flatten(1).sum(1).clamp(min=1))[self.has].mean()), 3)
        row["outside"] = round(float(((Mb * (1 - les)).flatten(1).sum(1) / les.flatten(1).sum(1).clamp(min=1))[self.has].mean()), 3)
        return row
