"""A price instead of a target: minimise max(f(x + M(B - x)), lo) + kappa rho mean(M) + w_tv TV(M), rho = the
logit drop per unit area of the generator's own mask, (f(x) - f(x + gM(B - x))) / mean(gM); lo = -inf or the
healthy target.  python price.py DEMO CACHE KAPPAS (e.g. 0.5,1,2)"""
from lib import *
cli(__doc__, 3)
def refine_price(c, kappa, scale=4, steps=150, lr=0.1, w_tv=4.0, floor=None, hinge=0.0):
    x, B, gm = c.x, c.B, c.gm
    with torch.no_grad():
        f0 = c.clf.logit(x).float(); fg = c.clf.logit(x + gm * (B - x)).float()
        rho = (f0 - fg).clamp(min=0) / gm.flatten(1).mean(1).clamp(min=1e-3)
    lo = torch.full_like(f0, -1e9) if floor is None else torch.maximum(fg.clamp(max=0), torch.full_like(f0, floor))
    size = x.shape[-2:]
    start = F.adaptive_avg_pool2d(gm, (size[0] // scale, size[1] // scale))
    lg = torch.logit(start.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    opt = torch.optim.Adam([lg], lr=lr)
    with frozen(c.clf), torch.enable_grad():
        for _ in range(steps):
            M = upsample_mask(lg, size)
            f = c.clf.logit(x + M * (B - x)).float()
            loss = torch.maximum(f, lo) + hinge * F.relu(f) + kappa * rho * M.flatten(1).mean(1) + w_tv * total_variation(M)
            opt.zero_grad(); loss.sum().backward(); opt.step()
    return upsample_mask(lg, size).detach()
name = sys.argv[1]; c = Ctx(sys.argv[1], sys.argv[2])
for kappa in [float(k) for k in sys.argv[3].split(",")]:
    for floor in [None, c.floor]:
        M = refine_price(c, kappa, floor=floor)
        print(name, json.dumps(c.score(M, lig=False, kappa=kappa, floor=floor)), flush=True)
