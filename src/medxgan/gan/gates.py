"""Is a trained GAN (and an inversion through it) good enough to explain with? Explicit gates.

A gallery of counterfactuals looks convincing even when the generator is a dot grid after 71 steps:
nothing in the pictures says the GAN failed. So every explanation is checked against:

* the run's **monitor gates** (its final ``metrics`` in config.json, :mod:`medxgan.gan.monitor`):
  disentanglement >= 0.9, oracle agreement on negatives / positives >= 0.8, diversity >= 0.5 -- the
  training targets of benchmarks/gan/RESULTS.md, met by the default preset's runs of record;
* the **reconstruction PSNR** of each scan against the run's own validation figure: the PSNR after
  inversion measured on validation images when ``train-encoder`` recorded one, else the project's
  inversion target of 24 dB (README, "Inverting 64 held-out positives"). A scan more than
  ``PSNR_SHORTFALL_DB`` below it is flagged: its counterfactual explains a different image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MONITOR_GATES: dict[str, float] = {"disent": 0.9, "oracle_neg": 0.8, "oracle_pos": 0.8, "diversity": 0.5}
PSNR_TARGET_DB = 24.0
PSNR_SHORTFALL_DB = 6.0


def read_run_config(run: str | Path | None) -> dict[str, Any]:
    """A GAN run's config.json as a dict ({} when there is none or it is unreadable: the checks then say nothing)."""
    if not run:
        return {}
    try:
        cfg = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def monitor_shortfalls(config: dict[str, Any]) -> list[str]:
    """The gates the run's final monitor metrics miss, e.g. ``["disent 0.16 < 0.9"]`` (a metric the run
    did not measure, such as the oracle's with --no-oracle, is not a shortfall)."""
    metrics = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
    out = []
    for key, gate in MONITOR_GATES.items():
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v < gate:
            out.append(f"{key} {v:.2f} < {gate:g}")
    return out


def psnr_floor(run: str | Path | None) -> tuple[float, str]:
    """(the PSNR below which a reconstruction is flagged, where its reference comes from)."""
    enc = read_run_config(Path(run) / "encoder") if run else {}
    ref = (enc.get("metrics") or {}).get("psnr_inversion") if isinstance(enc.get("metrics"), dict) else None
    if isinstance(ref, (int, float)) and math.isfinite(ref):
        return float(ref) - PSNR_SHORTFALL_DB, f"the run's validation PSNR after inversion, {ref:.1f} dB, minus {PSNR_SHORTFALL_DB:g} dB"
    return PSNR_TARGET_DB - PSNR_SHORTFALL_DB, f"the inversion target {PSNR_TARGET_DB:g} dB minus {PSNR_SHORTFALL_DB:g} dB"


def run_quality(run: str | Path | None) -> dict[str, Any]:
    """What the gallery and ``explain`` report about a run: steps, monitor shortfalls, the PSNR floor."""
    cfg = read_run_config(run)
    floor, why = psnr_floor(run)
    return {"steps_done": cfg.get("steps_done"), "steps": cfg.get("steps"), "status": cfg.get("status"),
            "monitor_shortfalls": monitor_shortfalls(cfg), "psnr_floor_db": floor, "psnr_floor_reason": why}
