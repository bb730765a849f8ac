"""Invert a demo's 30 held-out predicted positives once (the demo's selection and schedule: 75 steps from the
encoder anchor) and save codes, anatomy B, generator mask gM, reconstruction, twins and the classifier's
reference logits for the exploration scripts:  python cache.py DEMO OUT.pt"""
import sys, torch
from lib import cli
from pathlib import Path
from medxgan.evaluate.selection import select_images
from medxgan.data import load_dataset
from medxgan.explain.model import MedXGANModel
from medxgan.classifiers.reference import negative_logit_reference
cli(__doc__, 2)
root = Path(sys.argv[1]); out = Path(sys.argv[2])
torch.manual_seed(0)
mx = MedXGANModel.load(root / "gan", device="cpu", steps=75, restarts=1, minimal_mask_steps=0)
ds = load_dataset(root / "data", split="test", size=mx.size, channels=mx.channels)
sel = select_images(ds, mx.classifier, torch.device("cpu"), root / "data", split="test", subset="pred-pos", n=30, seed=0)
idx = sel.selected; x = sel.images[idx]; m = sel.masks[idx].float(); tw = sel.twins[idx]
train = load_dataset(root / "data", split="train", size=mx.size, channels=mx.channels)
xt, yt, _, _ = train.tensors()
ref = negative_logit_reference(mx.classifier, xt[yt == 0])
cf = mx.engine.counterfactuals(x)
with torch.no_grad():
    xp, B, gm = mx.engine.generator(cf.z1, cf.z2, return_parts=True)
torch.save(dict(x=x, m=m, tw=tw, z1=cf.z1, z2=cf.z2, B=B, gm=gm, xp=xp, ref=ref), out)
print("saved", ref)
