"""Run directories, shared by every trainer.

Layout::

    RUN/
      config.json          kind, package version, hyper-parameters, fingerprints of dependencies
      metrics.jsonl        one JSON object per logged step
      *.safetensors        final weights
      checkpoints/step_00001000/{state.json,state.safetensors}   full training state, last K kept
      samples/             images written during training
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from medxgan.runtime.atomic import atomic_replace_dir, atomic_write_json, atomic_write_text
from medxgan.runtime.errors import MedxganError, StorageError
from medxgan.runtime.outdir import is_empty, mark, temp_name
from medxgan.runtime.state import check_state, load_state, load_weights, save_state, save_weights
from medxgan.runtime.version import __version__


_WARNED_NEWER: set[str] = set()


def _version_tuple(v: Any) -> tuple[int, int] | None:
    try:
        major, minor = str(v).split(".")[:2]
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except (ValueError, TypeError):
        return None


def _warn_if_newer(path: Path, version: Any) -> None:
    """A run written by a newer medxgan (major.minor) may hold what this one cannot read: say so, once."""
    import warnings

    theirs, ours = _version_tuple(version), _version_tuple(__version__)
    if theirs is not None and ours is not None and theirs > ours and str(path) not in _WARNED_NEWER:
        _WARNED_NEWER.add(str(path))
        warnings.warn(f"{path}: written by medxgan {version}, newer than this medxgan {__version__}; "
                      "settings it added are ignored (upgrade medxgan to use them)", stacklevel=3)


class RunDir:
    """A training run on disk. Creating one does not touch the disk until something is written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ---- config -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def write_config(self, kind: str, **config: Any) -> dict[str, Any]:
        full = {"kind": kind, "medxgan_version": __version__, "torch_version": torch.__version__, **config}
        if is_empty(self.path):  # a folder this run creates (or an empty one): marked as medxgan's (runtime.outdir)
            mark(self.path, kind)
        atomic_write_json(self.config_path, full)
        return full

    def read_config(self, expect_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
        if not self.path.is_dir():
            raise MedxganError(f"{self.path}: run directory not found")
        try:
            config = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise MedxganError(f"{self.path}: not a medxgan run (no config.json)") from None
        except ValueError as exc:
            raise MedxganError(f"{self.config_path}: corrupt JSON ({exc})") from None
        if not isinstance(config, dict):
            raise MedxganError(f"{self.config_path}: holds a JSON {type(config).__name__}, not an object; not a medxgan run config")
        _warn_if_newer(self.config_path, config.get("medxgan_version"))
        if expect_kind is not None:
            kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
            if config.get("kind") not in kinds:
                raise MedxganError(
                    f"{self.path}: is a {config.get('kind')!r} run, expected {' or '.join(map(repr, kinds))}"
                )
        return config

    def update_config(self, **changes: Any) -> dict[str, Any]:
        """Read config.json, apply ``changes``, write it back (kind and versions kept)."""
        config = self.read_config()
        config.update(changes)
        atomic_write_json(self.config_path, config)
        return config

    # ---- metrics ------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one line. A line is written with a single write() call and flushed, so a crash
        leaves at most a partial last line, which read_metrics skips."""
        line = json.dumps(record, default=float) + "\n"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as fh:
                fh.write(line)
                fh.flush()
        except OSError as exc:  # a full disk: the operation and the file, one line
            raise StorageError.of("appending to", self.metrics_path, exc) from exc

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop lines logged after the checkpoint we resume from (they will be re-logged)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # ---- weights ------------------------------------------------------------------------------
    def save_weights(self, name: str, module_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> Path:
        state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
        path = self.path / f"{name}.safetensors"
        save_weights(path, state)
        return path

    def load_weights(self, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return load_weights(self.path / f"{name}.safetensors", device=device)

    def has_weights(self, name: str) -> bool:
        return (self.path / f"{name}.safetensors").is_file()

    # ---- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoints"

    def save_checkpoint(self, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
        """Write the full training state for `step` into a temp dir, rename it into place, prune."""
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_root / f"step_{step:09d}"
        tmp = Path(tempfile.mkdtemp(prefix=temp_name("step_"), dir=self.checkpoint_root))
        try:
            save_state(tmp, {"step": step, **state})
            atomic_replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.list_checkpoints()[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def list_checkpoints(self) -> list[Path]:
        """``checkpoints/step_<digits>`` folders, oldest first (other names are not the project's: ignored)."""
        if not self.checkpoint_root.is_dir():
            return []
        found = [p for p in self.checkpoint_root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.list_checkpoints()
        return ckpts[-1] if ckpts else None

    def load_checkpoint_step(self) -> int:
        """The step of the latest checkpoint (from its folder name; 0 without one)."""
        latest = self.latest_checkpoint()
        return int(latest.name.split("_")[1]) if latest is not None else 0

    def check_latest_checkpoint(self) -> None:
        """Refuse (one line) a latest checkpoint that cannot be read, naming it and the previous one that can."""
        ckpts = self.list_checkpoints()
        if not ckpts:
            return
        try:
            check_state(ckpts[-1])
        except MedxganError as exc:
            good = None
            for older in reversed(ckpts[:-1]):
                try:
                    check_state(older)
                    good = older
                    break
                except MedxganError:
                    continue
            hint = (f"the previous checkpoint {good} reads fine: move {ckpts[-1]} away to resume from step {int(good.name[5:])}"
                    if good is not None else "no earlier checkpoint reads either: start the run afresh in another folder")
            raise MedxganError(f"checkpoint {ckpts[-1]}: corrupt ({exc}); {hint}") from None

    def load_checkpoint(self, path: Path | None = None) -> dict[str, Any]:
        if path is None:
            self.check_latest_checkpoint()
        path = path or self.latest_checkpoint()
        if path is None:
            raise MedxganError(f"{self.path}: no checkpoint to resume from")
        return load_state(path)


def hash_tensor(h: Any, t: torch.Tensor) -> None:
    """Feed a tensor's shape, dtype and bytes to the hashlib object ``h`` (the fingerprints' one encoding)."""
    t = t.detach().cpu().contiguous()
    h.update(str(tuple(t.shape)).encode())
    h.update(str(t.dtype).encode())
    h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fingerprint_state_dict(state: dict[str, torch.Tensor]) -> str:
    """A short content hash of a model's weights (names, shapes and values)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        hash_tensor(h, state[name])
    return h.hexdigest()[:16]


def fingerprint_module(module: torch.nn.Module) -> str:
    return fingerprint_state_dict(module.state_dict())
