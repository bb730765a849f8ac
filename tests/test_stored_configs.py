"""Every stored record under benchmarks/ still loads through the public config objects (no training, fast).

The settings that used to travel as loose dicts are config dataclasses now (InversionConfig, MinimalMaskConfig,
EvaluateConfig); the records written before (evaluation configs in results/run JSON, explanation and
benchmark records, GAN preset defaults) must keep loading, and a GAN run whose config.json holds a preset's
``inversion`` dict of the older flat form must still be explained with those settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medxgan.explain.counterfactual import MinimalMaskConfig, split_options
from medxgan.gan.inversion import InversionConfig
from medxgan.gan.presets import PRESETS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _records(key_names: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(file, dict) for every JSON object stored under one of ``key_names`` anywhere in benchmarks/*.json."""
    found: list[tuple[str, dict]] = []

    def walk(o, where):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in key_names and isinstance(v, dict):
                    found.append((where, v))
                walk(v, where)
        elif isinstance(o, list):
            for v in o:
                walk(v, where)

    for p in sorted(BENCHMARKS.rglob("*.json")):
        walk(json.loads(p.read_text()), str(p.relative_to(BENCHMARKS)))
    return found


def test_every_stored_inversion_record_loads_and_round_trips():
    records = _records(("inversion", "inversion_defaults"))
    assert len(records) >= 20  # the evaluation and benchmark records of the earlier sessions
    for where, d in records:
        inv, mask = split_options(d)
        assert isinstance(inv, InversionConfig) and isinstance(mask, MinimalMaskConfig), where
        assert {**inv.changes(), **mask.flat()} == {k: v for k, v in d.items() if v != _default(k)}, where  # nothing lost


def _default(key: str):
    inv, mask = InversionConfig(), MinimalMaskConfig()
    if key.startswith("minimal_mask_"):
        return getattr(mask, key.removeprefix("minimal_mask_"))
    return getattr(inv, key)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_inversion_default_loads(name):
    inv, mask = split_options(PRESETS[name](channels=1).inversion)
    assert inv.counterfactual in ("generator", "residual") and mask.steps >= 0


def test_an_unknown_stored_option_is_one_line_naming_it():
    from medxgan.runtime.errors import MedxganError

    with pytest.raises(MedxganError, match="inversion option 'stepz'"):
        split_options({"stepz": 3})
    with pytest.raises(MedxganError, match="minimal_mask_steps -1"):
        split_options({"minimal_mask_steps": -1})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit (the TorchScript classifier)
def test_a_run_with_a_flat_preset_inversion_dict_is_explained_with_it(tmp_path):
    from helpers import write_gan_run

    from medxgan.pipeline import MedXGAN
    from medxgan.runtime.runs import RunDir

    run = write_gan_run(tmp_path)
    rd = RunDir(run)
    cfg = rd.read_config()
    cfg["preset"] = {"name": "old", "inversion": {"counterfactual": "residual", "w_cf": 1.0, "steps": 9, "minimal_mask_steps": 150,
                                                  "minimal_mask_target": "healthy", "minimal_mask_scale": 4}}
    cfg["classifier_reference"] = {"negative_logit_q05": -2.5}
    (run / "config.json").write_text(json.dumps(cfg))
    mx = MedXGAN.load(run, device="cpu")
    assert mx.engine.inversion_config == InversionConfig(counterfactual="residual", w_cf=1.0, steps=9)
    assert mx.engine.minimal_mask == MinimalMaskConfig(steps=150, target="healthy", scale=4, floor=-2.5)
    # keyword options still override the run's defaults (the README's MedXGAN.load("runs/gan", counterfactual="generator"))
    assert MedXGAN.load(run, device="cpu", counterfactual="generator").engine.counterfactual == "generator"
    # a complete config object is used as given
    given = InversionConfig(steps=3, restarts=1)
    assert MedXGAN.load(run, device="cpu", inversion=given).engine.inversion_config is given


def test_every_stored_evaluation_record_loads_as_an_evaluate_config():
    from medxgan.evaluate.runner import EvaluateConfig

    records = [(w, d) for w, d in _records(("settings", "config")) if "n_resamples" in d and "noise_sigmas" in d
               and "gan_preset" not in d]  # the demo's own settings are DemoConfig's (below)
    assert len(records) >= 8  # the evaluation benchmarks of the earlier sessions
    for where, d in records:
        cfg = EvaluateConfig.from_record(d).checked(d.get("n"))
        assert cfg.n_resamples == d["n_resamples"] and list(cfg.noise_sigmas) == [float(s) for s in d["noise_sigmas"]], where
        if d.get("inversion"):  # the inversion it ran with comes back as the config objects
            inv, mask = split_options(cfg.inversion)
            assert {**inv.changes(), **mask.flat()} == {k: v for k, v in d["inversion"].items() if v != _default(k)}, where


def test_every_stored_demo_settings_names_only_demo_config_fields():
    import dataclasses

    from medxgan.demo import DemoConfig

    fields = {f.name for f in dataclasses.fields(DemoConfig)} | {"seed"}
    demos = sorted(BENCHMARKS.glob("demo/**/demo.json"))  # the records of today and the archive (demo/archive/)
    assert len(demos) >= 30
    for p in demos:
        settings = json.loads(p.read_text())["settings"]
        assert set(settings) <= fields, (p, set(settings) - fields)  # a rerun compares them field by field
