"""Is it the network or the region? The learned in-fill with the `inpaint` in-fill's region (gM > 0.5 grown by 1 px
instead of H/16 px), or the biharmonic `inpaint` in-fill with the learned in-fills' region (grown H/16 px), through
infill_ablation.py unchanged otherwise:

    python benchmarks/perturbation/region_diagnostic.py learned-1px RUN --data DATA --infills learned --inpainter INP --baselines [--json J]
    python benchmarks/perturbation/region_diagnostic.py inpaint-4px RUN --data DATA --infills inpaint --baselines [--json J]

(the library's region functions are swapped for this process only; nothing else changes.)
"""

import sys
from pathlib import Path

import medxgan.explain.infill as infill

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("learned-1px", "inpaint-4px")
if len(sys.argv) < 2 or sys.argv[1] not in MODES:
    raise SystemExit(f"usage: region_diagnostic.py {{{'|'.join(MODES)}}} RUN --data DATA ... (the options of infill_ablation.py)")
mode = sys.argv.pop(1)
if mode == "learned-1px":
    infill.learned_grow = lambda size: 1
else:
    _region = infill.infill_region
    infill.infill_region = lambda gm, threshold=0.5, grow=1: _region(gm, threshold, grow=max(grow, infill.learned_grow(gm.shape[-2])))

import infill_ablation  # noqa: E402  (after the swap)

infill_ablation.main()
