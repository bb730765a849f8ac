"""medXGAN networks and presets: exact published sizes, shapes, serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from medxgan.gan.networks import build_discriminator, build_generator, count_parameters, sample_latents
from medxgan.gan.presets import PRESETS, NetConfig, Preset, get_preset
from medxgan.runtime.errors import MedxganError


def test_paper64_parameter_counts_exact():
    p = get_preset("paper-64", channels=3)
    assert (p.net.nz1, p.net.nz2, p.net.size) == (1000, 100, 64)
    assert count_parameters(build_generator(p.net)) == 11_943_296
    assert count_parameters(build_discriminator(p.net)) == 1_586_545


def test_paper128_parameter_count_exact():
    p = get_preset("paper-128", channels=3)
    assert (p.net.nz1, p.net.nz2, p.net.size, p.train.lambda_cls) == (100, 10, 128, 1.0)
    assert count_parameters(build_generator(p.net)) == 11_465_728
    D = build_discriminator(p.net)
    assert D.psi.in_features == 13 * 13 * 512


def test_paper64_layers_are_the_published_ones():
    G = build_generator(get_preset("paper-64", 3).net)
    assert G.fc.bias is not None and G.fc.out_features == 768
    convs = [m for m in G.body if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (768, 384, 5, 2), (384, 256, 5, 2), (256, 192, 5, 2), (192, 3, 8, 2)]
    assert all(c.bias is None for c in convs)
    D = build_discriminator(get_preset("paper-64", 3).net)
    convs = [m for m in D.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.padding[0]) for c in convs] == [
        (16, 2, 1), (32, 1, 0), (64, 2, 1), (128, 1, 0), (256, 2, 1), (512, 1, 0)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in D.features) == 5
    assert sum(isinstance(m, torch.nn.Dropout) for m in D.features) == 6
    assert D.psi.in_features == 5 * 5 * 512


@pytest.mark.parametrize("name", ["paper-64", "paper-128", "fast", "default"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(name, channels):
    p = get_preset(name, channels=channels)
    G, D = build_generator(p.net), build_discriminator(p.net)
    assert (G.channels, G.size) == (channels, p.net.size)
    y = torch.tensor([0, 1])
    z1, z2 = sample_latents(y, G.nz1, G.nz2)
    assert torch.all(z2[0] == 0) and torch.any(z2[1] != 0)
    x = G(z1, z2)
    assert x.shape == (2, channels, p.net.size, p.net.size)
    assert x.min() >= -1 and x.max() <= 1
    out = D(x, y)
    assert out.shape == (2,)


def test_projection_discriminator_uses_the_class():
    p = get_preset("default", channels=1)
    assert p.net.d_projection and p.train.ema_decay > 0 and get_preset("anchored", channels=1).net.d_projection
    D = build_discriminator(p.net).eval()
    x = torch.randn(4, 1, 64, 64)
    with pytest.raises(ValueError):
        D(x)
    assert not torch.allclose(D(x, torch.zeros(4, dtype=torch.long)), D(x, torch.ones(4, dtype=torch.long)))


def test_presets_serialise_and_rebuild():
    for name in PRESETS:
        p = get_preset(name, channels=1)
        d = json.loads(json.dumps(p.to_dict()))
        q = Preset.from_dict(d)
        assert q == p
        G1, G2 = build_generator(p.net), build_generator(d["net"])
        G2.load_state_dict(G1.state_dict())
        D1, D2 = build_discriminator(p.net), build_discriminator(q.net)
        D2.load_state_dict(D1.state_dict())
        G1.eval(), G2.eval()
        z1, z2 = torch.randn(2, G1.nz1), torch.randn(2, G1.nz2)
        assert torch.equal(G1(z1, z2), G2(z1, z2))


def test_preset_errors():
    with pytest.raises(MedxganError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(MedxganError, match="not a network or training option"):
        get_preset("default", bogus=1)
    with pytest.raises(MedxganError, match="unknown keys"):
        NetConfig.from_dict({"arch": "dcgan", "extra": 1})
    with pytest.raises(MedxganError):
        build_generator(NetConfig(arch="paper", size=96))
    with pytest.raises(MedxganError):
        build_generator(NetConfig(arch="dcgan", size=48))


def test_overrides_are_named():
    p = get_preset("fast", channels=1, ema_decay=0.99, d_projection=True)
    assert p.train.ema_decay == 0.99 and p.net.d_projection
    assert p.name.startswith("fast+")


def test_minibatch_std_option():
    from medxgan.gan.networks import minibatch_std

    h = torch.randn(8, 3, 4, 4)
    s = minibatch_std(h)
    assert s.shape == (8, 1, 4, 4) and torch.all(s > 0)
    assert torch.all(minibatch_std(h[:1].expand(8, -1, -1, -1)) < 1e-3)  # identical samples -> ~0
    for name in ("default", "paper-64"):
        D = build_discriminator(get_preset(name, channels=1, d_mbstd=True).net)
        assert D(torch.randn(6, 1, 64, 64), torch.tensor([0, 1] * 3)).shape == (6,)


@pytest.mark.parametrize("cin,cout,k,s,p,hw", [(12, 8, 5, 2, 0, 1), (6, 1, 8, 2, 0, 5), (6, 3, 4, 2, 1, 4), (5, 2, 3, 1, 1, 3)])
@pytest.mark.parametrize("bias", [False, True])
def test_fast_conv_transpose_matches_native(cin, cout, k, s, p, hw, bias):
    """The CPU fast paths (matmul for 1x1 inputs, col2im for few output channels) give the native
    transposed convolution's values and gradients."""
    from medxgan.gan.networks import ConvTranspose2d

    torch.manual_seed(0)
    fast = ConvTranspose2d(cin, cout, k, s, p, bias=bias).double()
    assert fast._fast_path(torch.zeros(1, cin, hw, hw)) is not None
    x = torch.randn(3, cin, hw, hw, dtype=torch.float64, requires_grad=True)
    y = fast(x)
    ref = torch.nn.functional.conv_transpose2d(x, fast.weight, fast.bias, stride=s, padding=p)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, [x, fast.weight], g)
    want = torch.autograd.grad(ref, [x, fast.weight], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert set(fast.state_dict()) == set(torch.nn.ConvTranspose2d(cin, cout, k, s, p, bias=bias).state_dict())
