"""train-classifier end to end on tiny phantoms: outputs, loading, resume equivalence, CLI errors."""

import json

import pytest
import torch

from medxgan.classifiers import load_classifier
from medxgan.classifiers.training import binary_metrics, train_classifier
from medxgan.cli import main
from medxgan.data.phantoms import synthesize
from medxgan.runtime.errors import MedxganError


@pytest.fixture(scope="module")
def tiny_brain(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    synthesize("brain-mri", root / "d", n=60, size=64, seed=3, show_progress=False)
    return root / "d"


def test_train_writes_a_loadable_run(tiny_brain, tmp_path):
    result = train_classifier(tiny_brain, tmp_path / "clf", epochs=2, batch_size=8, quiet=True)
    assert set(result["test"]) >= {"accuracy", "auc", "sensitivity", "specificity", "confusion_matrix"}
    cfg = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert cfg["kind"] == "classifier" and cfg["status"] == "finished"
    assert len((tmp_path / "clf" / "metrics.jsonl").read_text().splitlines()) == 2
    adapter = load_classifier(tmp_path / "clf")
    assert adapter.fingerprint == result["fingerprint"]
    # the adapter accepts another size and channel count
    p = adapter.prob(torch.zeros(2, 3, 80, 80))
    assert p.shape == (2,) and torch.all((p >= 0) & (p <= 1))


def test_resume_equals_uninterrupted(tiny_brain, tmp_path):
    kw = dict(batch_size=8, quiet=True, seed=5)
    train_classifier(tiny_brain, tmp_path / "full", epochs=3, **kw)
    train_classifier(tiny_brain, tmp_path / "part", epochs=2, **kw)
    # an interrupted run: pretend it stopped after epoch 2 and continue to 3
    cfg_path = tmp_path / "part" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["status"] = "running"
    cfg_path.write_text(json.dumps(cfg))
    train_classifier(tiny_brain, tmp_path / "part", epochs=3, resume=True, **kw)
    a = load_classifier(tmp_path / "full").model.state_dict()
    b = load_classifier(tmp_path / "part").model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_finished_run_is_not_overwritten(tiny_brain, tmp_path):
    train_classifier(tiny_brain, tmp_path / "c", epochs=1, batch_size=8, quiet=True)
    with pytest.raises(MedxganError, match="already holds"):
        train_classifier(tiny_brain, tmp_path / "c", epochs=1, batch_size=8, quiet=True)


def test_resume_policy_refusals(tiny_brain, tmp_path):
    """The one resume policy (runtime.loop.open_run): no checkpoint, an unfinished run without --resume,
    other settings on --resume."""
    with pytest.raises(MedxganError, match="nothing to resume"):
        train_classifier(tiny_brain, tmp_path / "none", epochs=1, batch_size=8, quiet=True, resume=True)
    train_classifier(tiny_brain, tmp_path / "c", epochs=1, batch_size=8, quiet=True)
    cfg_path = tmp_path / "c" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "status": "running"}))
    with pytest.raises(MedxganError, match="not finished.*--resume"):  # it used to restart silently
        train_classifier(tiny_brain, tmp_path / "c", epochs=2, batch_size=8, quiet=True)
    with pytest.raises(MedxganError, match=r"batch_size 4 \(the run has 8\).*lr 0.01 \(the run has 0.001\)"):
        train_classifier(tiny_brain, tmp_path / "c", epochs=2, batch_size=4, lr=1e-2, quiet=True, resume=True)


def test_binary_metrics_hand_values():
    m = binary_metrics([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1])
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == 0.5 and m["sensitivity"] == 0.5 and m["specificity"] == 0.5
    assert m["auc"] == pytest.approx(0.75)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train-classifier", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err
    assert main(["train-classifier", str(tmp_path), "--out", str(tmp_path / "c"), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_max_minutes_finishes_with_the_best_epoch_so_far(tiny_brain, tmp_path):
    res = train_classifier(tiny_brain, tmp_path / "c", epochs=5, batch_size=8, quiet=True, max_minutes=0.0)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["epochs_done"] == 1 and cfg["stopped_early"] and res["best_epoch"] == 1

