"""Pivotal tuning of the anatomy (Roich et al. 2021): per image, fine-tune a copy of G (Adam, STEPS steps, LR) so
that B(z1*) reproduces the scan outside the minimal mask, L1 on (1 - M)(B - x) [+ relu(f(B) - f(B_before)) with
--constrained: the tuned anatomy may not look less healthy to the classifier]; then refine the mask with the tuned
anatomy as the fill; ROUNDS times.  python pti.py DEMO CACHE STEPS LR ROUNDS [--constrained]"""
from lib import *
import copy, time
cli(__doc__, 5)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # mask_grid.py, one folder up
from mask_grid import FillPath
steps, lr, rounds = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
constrained = "--constrained" in sys.argv
c = Ctx(sys.argv[1], sys.argv[2]); torch.manual_seed(0)
M = c.default_mask()
name = sys.argv[1]
t0 = time.time()
fill = c.B
with torch.no_grad(): fB = c.clf.logit(c.B).float()
for r in range(rounds):
    Bs = []
    for i in range(len(c.x)):
        Gi = copy.deepcopy(c.G).train(False)
        for p in Gi.parameters(): p.requires_grad_(True)
        opt = torch.optim.Adam(Gi.parameters(), lr=lr)
        z1, z2, xi, w = c.z1[i:i+1], c.z2[i:i+1], c.x[i:i+1], 1 - M[i:i+1]
        for _ in range(steps):
            _, b, _ = Gi(z1, z2, return_parts=True)
            loss = (w * (b - xi).abs()).mean()
            if constrained:
                loss = loss + F.relu(c.clf.logit(b).float() - fB[i]).sum()
            opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad(): Bs.append(Gi(z1, z2, return_parts=True)[1])
    fill = torch.cat(Bs)
    M = refine_mask(c.clf, c.x, fill, c.gm, steps=150, w_area=1.0, w_tv=4.0, floor=c.floor, scale=4)
    row = c.score(M, fill=fill, lig=False, steps=steps, lr=lr, round=r, constrained=constrained, M_map=c.mean(iou_area_matched, M))
    paths = [FillPath(c.x[i], fill[i], M[i], c.z2[i]) for i in range(len(c.x))]
    row["lig"] = c.mean(iou_area_matched, latent_integrated_gradients(paths, c.clf, c.z1, c.z2).maps)
    with torch.no_grad(): row["fill_logit"] = round(float(c.clf.logit(fill).float().median()), 2)
    row["fill_twin_mae_outside"] = round(float(((fill - c.tw).abs() * (1 - c.m)).sum() / (1 - c.m).sum() / c.x.shape[1]), 4)
    row["sec"] = round(time.time() - t0)
    print(name, json.dumps(row), flush=True)
