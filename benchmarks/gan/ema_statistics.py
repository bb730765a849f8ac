"""Per checkpoint of a GAN run: the monitor's metrics of the raw generator, of the EMA copy as saved (BatchNorm
statistics copied from the raw generator) and of the EMA copy with standing statistics over prior latents.

    python benchmarks/gan/ema_statistics.py GAN_RUN

One JSON line per checkpoint (benchmarks/counterfactual/RESULTS.md, sixth session). The run must hold its classifier
and oracle (RUN/classifier, RUN/oracle), as `medxgan train` runs with an oracle do.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from medxgan.classifiers.loading import load_classifier
from medxgan.gan.monitor import Monitor
from medxgan.gan.networks import build_generator
from medxgan.runtime.batchnorm import standing_batchnorm_stats
from medxgan.runtime.runs import RunDir

sys.path.insert(0, str(Path(__file__).parent))
from standing_stats_ab import standing_stats_latents  # noqa: E402

KEYS = ("disent", "cls_pos", "oracle_neg", "oracle_pos", "delta")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a GAN run with checkpoints, RUN/classifier and RUN/oracle")
    run = ap.parse_args().run
    cfg = json.loads((run / "config.json").read_text())
    mon = Monitor(load_classifier(str(run / "classifier")), cfg["nz1"], cfg["nz2"], oracle=load_classifier(str(run / "oracle")))
    rd = RunDir(run)
    for ck in rd.list_checkpoints():
        st = rd.load_checkpoint(ck)["trainer"]
        row: dict = {"checkpoint": ck.name}
        for name in ("G", "G_ema"):
            G = build_generator(cfg["net"])
            G.load_state_dict(st[name])
            m = mon.evaluate(G.eval())
            row[name] = {k: round(m[k], 3) for k in KEYS}
            if name == "G_ema":
                G2 = copy.deepcopy(G)
                standing_batchnorm_stats(G2, standing_stats_latents(cfg["nz1"], cfg["nz2"]))
                m = mon.evaluate(G2)
                row["G_ema_standing"] = {k: round(m[k], 3) for k in KEYS}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
