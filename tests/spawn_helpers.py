"""Helpers shared by the tests that start torchrun-like worker processes (gloo on CPU)."""

from __future__ import annotations

import contextlib
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_workers(worker: Callable[[int, int, str], None], root: Path, nprocs: int, timeout: float = 120.0) -> None:
    """Run ``worker(rank, port, str(root))`` in ``nprocs`` spawned processes and wait. A worker that
    fails should write ``root/failed_<rank>.txt`` (its traceback), which the AssertionError quotes."""
    pc = mp.start_processes(worker, args=(free_port(), str(root)), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not pc.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker processes did not finish in {timeout:.0f} s")
    except BaseException:
        for p in pc.processes:
            if p.is_alive():
                p.terminate()
        fails = "\n".join(f.read_text() for f in Path(root).glob("failed_*.txt"))
        raise AssertionError(f"worker processes failed:\n{fails}")


@contextlib.contextmanager
def in_group(rank: int, port: int, world: int, root: str | Path) -> Iterator[Any]:
    """A worker's body: ``with in_group(rank, port, WORLD, root) as ctx: ...`` joins the gloo group,
    writes ``root/done_<rank>`` on success or ``root/failed_<rank>.txt`` (the traceback, quoted by
    ``spawn_workers``) on failure, and leaves the group either way."""
    from medxgan.runtime.distributed import cleanup

    ctx = join_group(rank, port, world)
    try:
        yield ctx
        (Path(root) / f"done_{rank}").write_text("ok")
    except BaseException:
        (Path(root) / f"failed_{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        cleanup(ctx)


def join_group(rank: int, port: int, world: int):
    """In a worker: the environment torchrun would set, one torch thread, then join the gloo group.
    Returns the DistContext (pass it to `medxgan.runtime.distributed.cleanup` at the end)."""
    import os

    import torch

    from medxgan.runtime.distributed import init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return init_distributed(torch.device("cpu"))


class DirFactory:
    """Stands in for pytest's tmp_path_factory when a module-scoped fixture function is called directly."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def mktemp(self, name: str) -> Path:
        d = self.root / name
        d.mkdir()
        return d
