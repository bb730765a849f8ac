"""What makes an explanation cheaper without changing it (issue 32): the paper-cnn classifier's fast 2 x 2 max-pool gives
aten's max-pool outputs and gradients bit for bit; the minimal-mask path reuses the anatomy B(z1*) instead of re-rendering it."""

from __future__ import annotations

import torch
from helpers import masked_setup
import torch.nn.functional as F

from medxgan.classifiers.architectures import MaxPool2x2, PaperCNN


def _pool_and_grad(pool, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xx = x.clone().requires_grad_(True)
    out = pool(xx)
    (g,) = torch.autograd.grad(out, xx, grad_out)
    return out.detach(), g


def test_maxpool2x2_equals_aten_bitwise_with_ties_nan_and_odd_sizes() -> None:
    gen = torch.Generator().manual_seed(0)
    special = torch.randn(2, 2, 6, 5, generator=gen)
    special[0, 0, 0, :2] = float("nan")  # two NaNs in one window: aten keeps the last one's index
    special[1, 1, 2:4, 2:4] = float("-inf")  # an all -inf window: the first element
    cases = [
        torch.randn(3, 4, 9, 7, generator=gen),  # odd height and width: the last row / column is dropped
        torch.randint(0, 3, (2, 3, 8, 8), generator=gen).float(),  # many ties: the first maximum wins
        torch.zeros(1, 1, 6, 6),  # every window a four-way tie
        special,
    ]
    fast = MaxPool2x2()
    for x in cases:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        grad_out = torch.randn(*x.shape[:2], h, w, generator=gen)
        ref_out, ref_grad = _pool_and_grad(lambda t: F.max_pool2d(t, 2), x, grad_out)
        out, grad = _pool_and_grad(fast, x, grad_out)
        assert out.is_contiguous() and grad.is_contiguous()
        assert torch.equal(torch.isnan(out), torch.isnan(ref_out))
        assert torch.equal(out.nan_to_num(7.0), ref_out.nan_to_num(7.0))
        assert torch.equal(grad, ref_grad)  # the same window element receives the gradient


def test_paper_cnn_with_fast_pool_equals_aten_pool_and_scripts() -> None:
    torch.manual_seed(0)
    model = PaperCNN().eval()
    ref = PaperCNN().eval()
    ref.load_state_dict(model.state_dict())  # state dicts unchanged by the pool (it has no parameters)
    for block in ref.features:
        block[3] = torch.nn.MaxPool2d(2)
    x = torch.rand(5, 1, 64, 64) * 2 - 1
    x[:, :, :20] = -1.0  # a flat region: ReLU zeros -> BatchNorm constants -> ties in the pool windows
    outs, grads = [], []
    for m in (model, ref):
        xx = x.clone().requires_grad_(True)
        out = m(xx)
        (g,) = torch.autograd.grad(out[:, 1].sum(), xx)
        outs.append(out.detach())
        grads.append(g)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    scripted = torch.jit.script(model)  # TorchScript export still works (aten's pool inside)
    assert torch.equal(scripted(x), outs[0])


def test_the_mask_path_uses_the_cached_anatomy_and_equals_the_generator_path():
    """LIG and the frames on the minimal-mask path take B(z1*) from the counterfactual (no generator pass per point) and
    give the maps of the path that re-renders B(z1*) at every point (float32 noise)."""
    from medxgan import MedXGAN
    from medxgan.explain.counterfactual import MaskPath
    from medxgan.explain.lig import latent_integrated_gradients

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=5, restarts=1, counterfactual="residual", w_cf=1.0, w_min=1.0, minimal_mask_steps=20))
    cf = mx.engine.counterfactuals(x)
    calls = []
    handle = G.register_forward_hook(lambda *a: calls.append(1))
    try:
        cached = latent_integrated_gradients(mx.engine.path_generators(cf), clf, cf.z1, cf.z2, steps=32, tol=None)
        frames, _ = mx.engine.interpolation(cf, 5)
    finally:
        handle.remove()
    assert not calls  # neither LIG nor the frames ran the generator
    rendered = [MaskPath(G, cf.images[i], cf.z2[i], cf.masks[i]) for i in range(len(cf))]  # B(z1*) re-rendered per point
    ref = latent_integrated_gradients(rendered, clf, cf.z1, cf.z2, steps=32, tol=None)
    assert torch.allclose(cached.maps, ref.maps, atol=1e-5, rtol=1e-4)
    assert torch.allclose(cached.delta, ref.delta, atol=1e-5)
    assert torch.allclose(frames[:, 0], cf.x_res, atol=1e-6) and torch.allclose(frames[:, -1], x, atol=1e-6)


def test_occlusion_and_rise_keep_a_cpu_pass_small_and_their_maps():
    """On a CPU occlusion and RISE classify at most CPU_ROWS_PER_PASS copies per pass (a pass of hundreds of rows thrashes
    the caches); the rows are independent, so the maps equal those of the former pass sizes (float32 noise)."""
    from medxgan.explain.base import CPU_ROWS_PER_PASS, rows_per_pass
    from medxgan.explain.baselines import OcclusionExplainer
    from medxgan.explain.perturbation import RISEExplainer

    _, clf, _ = masked_setup()
    torch.manual_seed(1)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert rows_per_pass(cpu, 999) == CPU_ROWS_PER_PASS and rows_per_pass(gpu, 999) == 999
    occ = OcclusionExplainer(clf)
    assert occ.copies_per_pass(torch.empty(8, 1, 64, 64)) == CPU_ROWS_PER_PASS // 8
    assert occ.copies_per_pass(torch.empty(3 * CPU_ROWS_PER_PASS, 1, 64, 64)) == 1  # never 0
    assert OcclusionExplainer(clf, perturbations_per_eval=7).copies_per_pass(x) == 7  # an explicit value is kept
    rows = []
    handle = clf.model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        small = occ.explain(x).maps
        occ_rows, rows[:] = max(rows), []
        rise = RISEExplainer(clf, n_masks=300).explain(x).maps
        rise_rows = max(rows)
    finally:
        handle.remove()
    assert occ_rows <= CPU_ROWS_PER_PASS and rise_rows <= CPU_ROWS_PER_PASS
    assert torch.allclose(small, OcclusionExplainer(clf, perturbations_per_eval=64).explain(x).maps, atol=1e-6)
    assert torch.allclose(rise, RISEExplainer(clf, n_masks=300, rows_per_pass=300).explain(x).maps, atol=1e-6)


def test_a_pass_size_below_one_is_one_line_before_any_work():
    import pytest

    from medxgan.explain.baselines import OcclusionExplainer
    from medxgan.explain.perturbation import RISEExplainer
    from medxgan.runtime.errors import MedxganError

    _, clf, _ = masked_setup()
    with pytest.raises(MedxganError, match="perturbations_per_eval 0: must be >= 1"):
        OcclusionExplainer(clf, perturbations_per_eval=0)
    with pytest.raises(MedxganError, match="rows_per_pass -3: must be >= 1"):
        RISEExplainer(clf, rows_per_pass=-3)
