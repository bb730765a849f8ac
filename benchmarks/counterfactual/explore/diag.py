"""Where the minimal mask's logit drop comes from: the classifier's median logit (scans with a lesion) on the scan,
its twin, the anatomy B, and the scan with parts filled by B: the true lesion L, L dilated 3 px, the minimal mask
M, M inside / outside L, the generator's mask gM, gM outside dilated L.  python diag.py DEMO CACHE"""
from lib import *
cli(__doc__, 2)
for name in sys.argv[1:2]:
    c = Ctx(sys.argv[1], sys.argv[2]); M = c.default_mask(); x, B = c.x, c.B; les = (c.m > 0.5).float()
    h = c.has
    def L(t): 
        with torch.no_grad(): return round(float(c.clf.logit(t).float()[h].median()), 2)
    fill = lambda R: x + R * (B - x)
    Mi, Mo = M * les, M * (1 - les)
    dil = (F.max_pool2d(les, 7, 1, 3))
    print(name, dict(x=L(x), twin=L(c.tw), B=L(B), les=L(fill(les)), les_dil3=L(fill(dil)), M=L(fill(M)), M_in=L(fill(Mi)), M_out=L(fill(Mo)), gm=L(fill(c.gm)), gm_out=L(fill(c.gm*(1-dil))),
      floor=round(c.floor, 2), Mgm=round(float((M > c.gm + 0.05).float().flatten(1).mean(1)[h].mean() * 64 * 64), 1)))
