"""Standing BatchNorm statistics (runtime.batchnorm): hand values, GlobalBatchNorm2d, no-ops."""

from __future__ import annotations

import torch
from torch import nn

from medxgan.runtime.batchnorm import standing_batchnorm_stats
from medxgan.runtime.distributed import GlobalBatchNorm2d


class TwoInputs(nn.Module):
    """bn(a + b): a module called with two positional inputs, like a generator G(z1, z2)."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.bn(a + b)


def test_hand_values_two_batches():
    # batch 1, channel 0: values 1, 3 (mean 2, unbiased var 2); batch 2: 5, 9 (mean 7, var 8)
    # channel 1: batch 1: 0, 0 (mean 0, var 0); batch 2: 2, 6 (mean 4, var 8)
    # cumulative average: channel 0 mean 4.5, var 5; channel 1 mean 2, var 4
    b1 = torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[0.0]]]])
    b2 = torch.tensor([[[[5.0]], [[2.0]]], [[[9.0]], [[6.0]]]])
    m = TwoInputs(nn.BatchNorm2d(2, momentum=0.1)).eval()
    m.bn.running_mean.fill_(-100.0)
    n = standing_batchnorm_stats(m, [(b1, torch.zeros_like(b1)), (b2 - 1.0, torch.ones_like(b2))])
    assert n == 1
    assert torch.allclose(m.bn.running_mean, torch.tensor([4.5, 2.0]))
    assert torch.allclose(m.bn.running_var, torch.tensor([5.0, 4.0]))
    assert int(m.bn.num_batches_tracked) == 2
    # the module itself: mode, momentum and parameters untouched
    assert not m.training and m.bn.momentum == 0.1
    assert torch.equal(m.bn.weight, torch.ones(2)) and torch.equal(m.bn.bias, torch.zeros(2))


def test_global_batchnorm_is_updated_and_keeps_its_class():
    m = TwoInputs(GlobalBatchNorm2d(1)).eval()
    x = torch.tensor([[[[2.0]]], [[[4.0]]]])
    assert standing_batchnorm_stats(m, [(x, torch.zeros_like(x))]) == 1
    assert type(m.bn) is GlobalBatchNorm2d
    assert torch.allclose(m.bn.running_mean, torch.tensor([3.0])) and torch.allclose(m.bn.running_var, torch.tensor([2.0]))


def test_nothing_to_do():
    m = TwoInputs(nn.BatchNorm2d(1))
    before = m.bn.running_mean.clone()
    assert standing_batchnorm_stats(m, []) == 0  # no batch: statistics kept
    assert torch.equal(m.bn.running_mean, before)
    assert standing_batchnorm_stats(TwoInputs(nn.Identity()), [(torch.ones(1), torch.ones(1))]) == 0
