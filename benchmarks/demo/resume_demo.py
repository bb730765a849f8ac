"""Resume a demo folder with its own stored settings (demo.json), e.g. to add the rows of a method new since it was made.

    python benchmarks/demo/resume_demo.py DEMO_DIR
"""

from __future__ import annotations

import json
import sys
import time

from medxgan.demo import DemoConfig, run_demo


def main(out: str) -> None:
    s = json.load(open(f"{out}/demo.json"))["settings"]
    seed = s.pop("seed", 0)
    fields = DemoConfig.__dataclass_fields__
    # demo.json stores tuples as lists (gan_overrides: a list of [key, value] pairs)
    cfg = DemoConfig(**{k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                        for k, v in s.items() if k in fields})
    t = time.time()
    r = run_demo(out, config=cfg, seed=seed, show_progress=False)
    print("timings", r["timings"], "reused", r["reused"], "wall", round(time.time() - t, 1))


if __name__ == "__main__":
    main(sys.argv[1])
