"""Multi-GPU / multi-node training on PyTorch's distributed engine (launched by ``torchrun``).

    torchrun --nproc_per_node 4 -m medxgan train data/brain --classifier runs/clf --out runs/gan

torchrun starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT);
`init_distributed` reads them, joins the process group (NCCL on CUDA, gloo on CPU) and pins the
process to cuda:LOCAL_RANK. Without those variables (or with WORLD_SIZE = 1) everything here is a
no-op: `world_size()` is 1, `shard` returns its input, the collectives return at once.

The trainers use one scheme (nanoGPT-like, rank-0-only I/O): every random draw of a step is made for
the GLOBAL batch on every rank from identically seeded RNGs, and each rank keeps its contiguous slice
(`shard`). The ranks' RNG states therefore stay identical and equal to a single process's, so a
checkpoint written by rank 0 resumes under any world size.

`GlobalBatchNorm2d` computes training-mode batch statistics over all ranks, so that a distributed
step equals the single-process step on the same global batch (per-rank statistics would not).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from medxgan.runtime.errors import MedxganError

# long enough for rank 0 to train the oracle classifier while the others wait at a barrier
_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank (global), world_size, local_rank (on this node), its device,
    and whether `init_distributed` created the process group (then `cleanup` destroys it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes the run directory."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise MedxganError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def context_from_env(device: torch.device | str = "cpu") -> DistContext:
    """The context torchrun's environment describes (rank 0 of 1 when it is not set)."""
    ws = _env_int("WORLD_SIZE", 1)
    return DistContext(rank=_env_int("RANK", 0), world_size=ws, local_rank=_env_int("LOCAL_RANK", 0), device=torch.device(device))


def init_distributed(device: torch.device | str) -> DistContext:
    """Join the process group torchrun describes; a no-op (rank 0 of 1) without torchrun.

    CUDA: backend NCCL and the device becomes cuda:LOCAL_RANK (a different explicit index is a
    MedxganError). CPU: backend gloo. A process group that already exists (a caller set it up) is
    used as is and left to its owner."""
    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), device)
        return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, _rank_device(device, ctx), owns_group=False)
    ctx = context_from_env(device)
    if ctx.world_size <= 1:
        return ctx
    if not dist.is_available():
        raise MedxganError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if device.type not in ("cpu", "cuda"):
        raise MedxganError(f"device {device}: distributed training runs on cuda (NCCL) or cpu (gloo) only", arg="device")
    device = _rank_device(device, ctx)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # binds NCCL to this GPU (torch >= 2.3)
    dist.init_process_group(backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size, timeout=_TIMEOUT, **kwargs)
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, device, owns_group=True)


def _rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    if device.type != "cuda" or ctx.world_size <= 1:
        return device
    if device.index is not None and device.index != ctx.local_rank:
        raise MedxganError(f"device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda", arg="device")
    if ctx.local_rank >= torch.cuda.device_count():
        raise MedxganError(f"LOCAL_RANK {ctx.local_rank}: this node has only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", ctx.local_rank)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if `init_distributed` created it."""
    if ctx.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(device: torch.device | str) -> Iterator[DistContext]:
    """`with distributed(dev) as ctx:` init_distributed on entry, cleanup on exit (also on errors)."""
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        cleanup(ctx)


# ---- state of the current process group (rank 0 of 1 without one) -----------------------------
def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


# ---- data ----------------------------------------------------------------------------------------
def shard(t_global: torch.Tensor, parts: int = 1) -> torch.Tensor:
    """This rank's rows of a tensor drawn for the global batch.

    parts = 1: the contiguous slice [rank * n, (rank + 1) * n) with n = N / world_size.
    parts = k: the tensor is k global batches one after the other (e.g. cat([fakes, reconstructions]))
    and this rank's input is cat([its slice of each]); the rows are chosen to match that layout."""
    ws = world_size()
    if ws == 1:
        return t_global
    n_all = t_global.shape[0]
    if n_all % (ws * parts):
        raise ValueError(f"cannot shard {n_all} rows into {parts} part(s) over {ws} ranks")
    n = n_all // (ws * parts)
    r = rank()
    return t_global.reshape(parts, ws, n, *t_global.shape[1:])[:, r].reshape(parts * n, *t_global.shape[1:])


def check_divisible(batch_size: int, flag: str = "--batch-size") -> None:
    """The global batch is split evenly over the ranks (MedxganError otherwise)."""
    ws = world_size()
    if batch_size % ws:
        raise MedxganError(
            f"{flag} {batch_size}: the global batch is split over {ws} processes; set it to a multiple of {ws}"
        )


# ---- collectives -----------------------------------------------------------------------------------
def barrier() -> None:
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a new tensor; not differentiable). NCCL needs `t` on this rank's GPU."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `t` (same shape everywhere) in rank order: the global batch."""
    ws = world_size()
    if ws == 1:
        return t
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(ws)]
    dist.all_gather(parts, t)
    return torch.cat(parts, 0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order (e.g. to merge the shards of an evaluation)."""
    ws = world_size()
    if ws == 1:
        return [obj]
    out: list[Any] = [None] * ws
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a time limit seen by one of them)."""
    if world_size() == 1:
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([int(flag)], device=device)).item() > 0)


def mean_over_ranks(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Average scalar statistics over ranks (every rank must pass the same keys in the same order)."""
    if world_size() == 1 or not values:
        return values
    t = all_reduce_sum(torch.tensor(list(values.values()), dtype=torch.float64, device=device)) / world_size()
    return dict(zip(values.keys(), t.tolist()))


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: y = sum_r x_r on every rank, so dL/dx_r = sum_r' dL_r'/dy.

    The same as torch.distributed.nn.functional.all_reduce, which torch 2.13 deprecates (a
    FutureWarning on every call). Its backward is itself differentiable (double backward, R1)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad)


def differentiable_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks that gradients flow through (identity on one process)."""
    return _AllReduceSum.apply(t) if world_size() > 1 else t


# ---- cross-rank BatchNorm --------------------------------------------------------------------------
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics cover the global batch (all ranks).

    Hand-written because torch's nn.SyncBatchNorm is CUDA-only (its forward rejects CPU tensors), and
    the CPU (gloo) path must give the single-process numbers too. With world_size > 1, wherever
    BatchNorm2d uses batch statistics (training mode, or no running statistics):
    mean = sum_r sum(x_r) / N and the biased variance = sum_r sum((x_r - mean)^2) / N (two passes, as
    BatchNorm2d computes it), through a differentiable all-reduce, so that gradients (also w.r.t. the
    input, and the double backward of R1) equal those of BatchNorm2d on the concatenated batch;
    running_mean / running_var (unbiased: x N / (N - 1)) and num_batches_tracked move exactly as
    BatchNorm2d moves them. Statistics are computed in float32 also under autocast. Otherwise (eval
    mode with running statistics, or one process) it is BatchNorm2d. Same parameters, buffers and
    state_dict keys: checkpoints are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or self.running_mean is None  # as BatchNorm2d decides
        if not (batch_stats and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        xf = x.float()
        n_local = xf.numel() // c
        s1 = differentiable_sum(torch.cat([xf.sum(dim=(0, 2, 3)), xf.new_tensor([float(n_local)])]))
        count = s1[c].detach()
        mean = s1[:c] / count
        centred = xf - mean.view(1, c, 1, 1)
        var = differentiable_sum(centred.pow(2).sum(dim=(0, 2, 3))) / count
        if self.training and self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average
                    f = 1.0 / float(self.num_batches_tracked)
                else:
                    f = self.momentum
                n = float(count)
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a GlobalBatchNorm2d sharing its parameters and buffers
    (like nn.SyncBatchNorm.convert_sync_batchnorm). Returns the (possibly new) root module."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_global_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` (itself when world_size is 1). No buffer broadcast before
    each forward: GlobalBatchNorm2d keeps the buffers identical on every rank already."""
    if world_size() == 1:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    # A 1-channel conv weight (C_in = 1) gets its gradient with a different (equivalent) stride on the
    # size-1 dimension; DDP copies it into its bucket correctly but warns that it "may impair performance".
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
    # torch 2.13 renamed broadcast_buffers (FutureWarning); older versions only know the old name
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters else {"broadcast_buffers": False}
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, **no_sync)
