"""`evaluate` and `explain` shard their images across torchrun ranks and merge into one output that
equals a single-process run (CPU, gloo, 2 processes, one spawn for both checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import known_images, make_eval_data, strip_cost, tiny_eval_clf, write_gan_run, write_png
from spawn_helpers import in_group, spawn_workers

WORLD = 2
EVAL_KW = dict(split="test", noise_sigmas=(0.05,), max_sensitivity=False, batch_size=1, device="cpu", n_resamples=100,
               show_progress=False, methods=["saliency", "gradcam"])
EXPLAIN_KW = dict(batch_size=1, frames=3, show_progress=False)


def _explain_model(run: Path):
    from medxgan.pipeline import MedXGAN

    return MedXGAN.load(run, device="cpu", steps=5, restarts=1)


def _worker(rank: int, port: int, root: str) -> None:
    import warnings

    from medxgan.evaluate.runner import evaluate
    warnings.simplefilter("ignore")
    r = Path(root)
    with in_group(rank, port, WORLD, root):
        evaluate(r / "data", r / "eval_ws2", classifier=tiny_eval_clf(), **EVAL_KW)
        _explain_model(r / "gan" / "run").explain_files([r / "images"], r / "explain_ws2", **EXPLAIN_KW)


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    from medxgan.report import figures as fig

    root = tmp_path_factory.mktemp("shard")
    make_eval_data(root / "data", n_pos=3, n_neg=2)
    # the fixture's TorchScript classifier: matched by what the warning says (a DeprecationWarning on torch 2.13,
    # a FutureWarning on 2.14)
    with pytest.warns(Warning, match=r"`torch\.jit\.\w+` is deprecated"):
        write_gan_run(root / "gan")
    (root / "images").mkdir()
    x, _, _ = known_images(3, seed=21)
    for i in range(3):
        write_png(root / "images" / f"im{i}.png", np.asarray(fig.tensor_to_pil(x[i])))
    spawn_workers(_worker, root, WORLD)
    return root


def _rows(path: Path) -> dict:
    """Per-image rows keyed by (image, method), without the timings (the only legitimate difference)."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r = {k: v for k, v in r.items() if k != "time_s"}
        r["metrics"] = {g: m for g, m in r["metrics"].items() if g != "cost"}
        out[(r["image_id"], r["method"])] = r
    return out


def _assert_close(a, b, path="", rel=1e-6):
    """Nested dicts/lists equal, floats within ``rel``."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}/{k}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=rel, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def test_sharded_evaluate_equals_single_process(shard_root):
    from medxgan.evaluate.runner import evaluate
    single = evaluate(shard_root / "data", shard_root / "eval_ws1", classifier=tiny_eval_clf(), **EVAL_KW)
    merged = json.loads((shard_root / "eval_ws2" / "results.json").read_text())
    assert not list((shard_root / "eval_ws2").glob("per_image.jsonl.rank*"))  # shards merged and removed
    assert merged["run"]["computed"] == single["run"]["computed"] == 5 * 2
    # equal up to float summation order (the workers run 1 thread, this process maybe more)
    _assert_close(_rows(shard_root / "eval_ws2" / "per_image.jsonl"), _rows(shard_root / "eval_ws1" / "per_image.jsonl"))
    _assert_close(strip_cost(merged["methods"]), strip_cost(json.loads(json.dumps(single["methods"]))))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sharded_explain_equals_single_process(shard_root):
    s1 = _explain_model(shard_root / "gan" / "run").explain_files([shard_root / "images"], shard_root / "explain_ws1", **EXPLAIN_KW)
    s2 = json.loads((shard_root / "explain_ws2" / "summary.json").read_text())
    assert s2["n_images"] == 3 and [r["name"] for r in s2["images"]] == [r["name"] for r in s1["images"]]
    for a, b in zip(s1["images"], s2["images"]):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4) and a["prob_negative"] == pytest.approx(b["prob_negative"], abs=1e-5)
        assert (shard_root / "explain_ws2" / b["name"] / "panel.png").is_file()
