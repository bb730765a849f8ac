"""Standing BatchNorm statistics (runtime.batchnorm) and the EMA generator that uses them."""

from __future__ import annotations

import torch
from helpers import small_conv_classifier, square_lesion_data
from torch import nn

from medxgan.gan import get_preset
from medxgan.gan.train import GANTrainer, standing_stats_latents
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


def _trainer(seed: int = 0) -> GANTrainer:
    torch.manual_seed(seed)
    preset = get_preset("default", channels=1, size=32, g_width=4, d_width=4, nz1=8, nz2=4)
    return GANTrainer(preset, small_conv_classifier(1, 0), "cpu")


def _state(t: GANTrainer) -> dict[str, torch.Tensor]:
    return {f"{p}.{k}": v.clone() for p in ("G", "D") for k, v in getattr(t, p).state_dict().items()} | {
        f"G_ema.{k}": v.clone() for k, v in t.G_ema.named_parameters()}


def test_ema_generator_gets_standing_stats_without_changing_training():
    x, y = square_lesion_data(16, 32, 1, 0)
    a, b = _trainer(), _trainer()
    for step in range(4):
        torch.manual_seed(100 + step)
        a.step(x[:8], y[:8])
        torch.manual_seed(100 + step)
        if step == 1:  # a monitor / checkpoint between two steps: no effect on the training random stream or weights
            rng = torch.get_rng_state()
            G = b.generator
            assert torch.equal(torch.get_rng_state(), rng)
            assert G is b.G_ema
        b.step(x[:8], y[:8])
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # the exported EMA generator normalises with its own statistics: those of the fixed prior batches
    G = b.generator
    ref = _trainer()
    ref.G_ema.load_state_dict(b.G_ema.state_dict())
    standing_batchnorm_stats(ref.G_ema, standing_stats_latents(8, 4))
    bn_keys = [k for k in G.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert bn_keys
    assert all(torch.equal(G.state_dict()[k], ref.G_ema.state_dict()[k]) for k in bn_keys)
    # and they differ from the raw generator's (which the EMA copied at every step)
    assert any(not torch.allclose(G.state_dict()[k], b.G.state_dict()[k]) for k in bn_keys)
