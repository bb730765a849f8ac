"""Train myclf.binary on the phantoms at its own input (96 px RGB, ImageNet-normalised [0, 1]); save a
DataParallel-style checkpoint {"model": {"module.*": ...}} as training scripts often do.
Run inside the work folder of run.sh (reads data/brain, writes clf.pt there)."""
import argparse

import torch
import torch.nn.functional as F
from medxgan.data import load_dataset
import myclf

argparse.ArgumentParser(description=__doc__).parse_args()  # no options; --help says what it does
torch.manual_seed(0)
model = myclf.binary()
x, y, _, _ = load_dataset("data/brain", split="train", size=64).tensors()
mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
prep = lambda b: ((F.interpolate(b, size=96, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1) + 1) / 2 - mean) / std
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(6):
    for idx in torch.randperm(len(x)).split(32):
        loss = F.binary_cross_entropy(model(prep(x[idx]))[:, 0], y[idx].float())
        opt.zero_grad(); loss.backward(); opt.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
model.eval()
xt, yt, _, _ = load_dataset("data/brain", split="test", size=64).tensors()
with torch.no_grad():
    print(f"test accuracy {float(((model(prep(xt))[:, 0] >= 0.5).long() == yt).float().mean()):.3f}")
torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 6}, "clf.pt")
