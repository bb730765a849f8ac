"""A preservation term beside the deletion one (Dabkowski & Gal 2017): + relu(t_pres - f(B + M(x - B))), the
masked part of the scan pasted into its anatomy must stay positive (t_pres 0, f(x)/2, f(x)); and the mask on a grid
8x coarser.  python pres.py DEMO CACHE"""
from lib import *
cli(__doc__, 2)
def refine2(c, t_pres, scale=4, steps=150, lr=0.1, w_tv=4.0, w_area=1.0, w_pres=1.0):
    x, B, gm = c.x, c.B, c.gm
    t_del = target_logits(c.clf, x, B, gm, c.floor)
    size = x.shape[-2:]
    start = F.adaptive_avg_pool2d(gm, (size[0] // scale, size[1] // scale)) if scale > 1 else gm
    lg = torch.logit(start.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    opt = torch.optim.Adam([lg], lr=lr)
    with frozen(c.clf), torch.enable_grad():
        for _ in range(steps):
            M = upsample_mask(lg, size)
            loss = F.relu(c.clf.logit(x + M * (B - x)).float() - t_del) + w_area * M.flatten(1).mean(1) + w_tv * total_variation(M)
            if w_pres:
                loss = loss + w_pres * F.relu(t_pres - c.clf.logit(B + M * (x - B)).float())
            opt.zero_grad(); loss.sum().backward(); opt.step()
    return upsample_mask(lg, size).detach()
name = sys.argv[1]; c = Ctx(sys.argv[1], sys.argv[2])
with torch.no_grad(): fx = c.clf.logit(c.x).float()
for label, tp, sc in [("scale8", None, 8), ("pres0", torch.zeros_like(fx), 4), ("pres_half_fx", fx / 2, 4), ("pres_fx", fx, 4)]:
    M = refine2(c, tp, scale=sc, w_pres=0.0 if tp is None else 1.0)
    print(name, json.dumps(c.score(M, lig=True, variant=label, M_map=c.mean(iou_area_matched, M))), flush=True)
