"""Standing BatchNorm statistics for a weight-averaged (EMA) network.

An EMA copy of a network has *averaged weights* but, if its BatchNorm running statistics are copied
from the raw network, statistics that describe the *raw* weights' activations. Where the two differ
the EMA network normalises with the wrong mean and variance. Measured on the `default` medXGAN preset
(benchmarks/counterfactual/RESULTS.md, sixth session): at step 1500 of a chest run the raw generator's
disentanglement rate was 0.96 and its EMA copy's 0.33; the EMA copy with its own statistics had 1.00.
The cure is BigGAN's "standing statistics" (Brock et al., ICLR 2019): run the EMA network in training
mode over batches of its own inputs and keep the cumulative average of the batch statistics.

Hand-written: torch.optim.swa_utils.update_bn does the same for a DataLoader of single tensors, but
not for a generator called with several inputs, and it would call GlobalBatchNorm2d's collective
forward on one rank only (a hang in a distributed run); here the statistics are gathered on a copy
whose BatchNorm layers are plain, rank-local ones.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from medxgan.runtime.distributed import GlobalBatchNorm2d


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def standing_batchnorm_stats(module: nn.Module, batches: Iterable[Sequence[Tensor]]) -> int:
    """Replace the running mean/variance of every BatchNorm layer of ``module`` by the cumulative average
    of its batch statistics over ``batches`` (each a tuple of positional inputs of ``module``), computed
    in training mode on a private copy. The module's parameters, mode and every other buffer are left as
    they are. Returns the number of BatchNorm layers updated (0: nothing to do, no batch is run)."""
    targets = _batchnorms(module)
    if not targets:
        return 0
    work = copy.deepcopy(module)
    for m in work.modules():
        if isinstance(m, GlobalBatchNorm2d):  # rank-local statistics: no collective on one rank
            m.__class__ = nn.BatchNorm2d
    layers = _batchnorms(work)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    work.train()
    ran = 0
    for args in batches:
        work(*args)
        ran += 1
    if ran == 0:
        return 0
    for dst, src in zip(targets, layers):
        dst.running_mean.copy_(src.running_mean)
        dst.running_var.copy_(src.running_var)
        if dst.num_batches_tracked is not None and src.num_batches_tracked is not None:
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
    return len(targets)
