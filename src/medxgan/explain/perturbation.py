"""Perturbation baselines: the mask-optimisation and random-mask explanations, behind the one Explainer interface.

They answer the question a generative explainer must face: what does the generator add over a mask that is
optimised (or sampled) with a plain, non-generative in-fill? Each explains the classifier's positive class
and returns an N x 1 x H x W map, higher = more important for the positive decision.

=============================  ==========================================================================
``extremal-perturbation``      Fong, Patrick & Vedaldi (ICCV 2019), TorchRay's ``extremal_perturbation``
                               with blur perturbation, the preservation game and its area constraint:
                               per area a, maximise the positive logit of the image kept inside a smooth
                               mask (the rest blurred, pyramid of 8 blur levels) under the ranking loss
                               ``||sort(m) - r_a||^2`` that forces the mask to cover a fraction a of the
                               image; the map is the sum of the masks over the areas (the paper's pointing
                               setting). Smooth masks from the smooth-max ("softmax" pooling) of Gaussian
                               bumps on a coarse grid, SGD with momentum, jitter (mirror every other step).
``meaningful-perturbation``    Fong & Vedaldi (ICCV 2017), the deletion game: the smallest, smoothest region
                               whose blurring removes the positive decision, min p(pos | x blurred on 1 - m)
                               + l1 mean(1 - m) + l_tv TV_beta(m), mask on a grid 8x coarser than the image
                               upsampled bilinearly, Adam; the map is 1 - m (the deleted region).
``rise``                       Petsiuk, Das & Saenko (BMVC 2018): the p(pos)-weighted mean of random
                               upsampled binary masks (grid s = 8 cells, keep probability p = 0.5,
                               random shift), normalised by the expected mask N p; the masked-out pixels are
                               set to 0 (mid-grey in [-1, 1] units, the occlusion baseline's fill).
=============================  ==========================================================================

Sizes are given for the paper's 224 px images and scaled with the image size (TorchRay's mask step 7 / sigma
21 / blur 20 px at 224 px become 2 / 6 / 5.7 px at 64 px). Every method is deterministic: RISE draws its
masks from a ``torch.Generator`` seeded with ``seed`` (the same masks for every image), the optimisations
start from constants.

Why hand-written: TorchRay (the reference implementation of Extremal Perturbation) installs torchvision,
pycocotools and pymongo and has had no release since 2020; its ``extremal_perturbation`` module itself needs
only torch, and ``benchmarks/perturbation/torchray_parity.py`` runs it from the downloaded sdist (not installed)
against :class:`ExtremalPerturbationExplainer` on a small network. Captum has neither method; the PyPI package
``captum-rise`` (one release) draws its masks from the unseeded global RNG with a Python loop per grid cell and
expects class-indexed outputs, so RISE is the ~30 lines below. Meaningful Perturbation has no maintained
library implementation.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medxgan.explain.base import Explainer, rows_per_pass
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.tensors import frozen

__all__ = [
    "gaussian_smooth",
    "blur_pyramid",
    "apply_pyramid",
    "SmoothMaskGenerator",
    "ExtremalPerturbationExplainer",
    "MeaningfulPerturbationExplainer",
    "RISEExplainer",
    "rise_masks",
    "rise_saliency",
    "PERTURBATION_METHODS",
]

_REF_SIZE = 224.0  # the papers' image size, against which the pixel sizes below are scaled
#: on a CPU, Extremal Perturbation optimises as many images at once as keep the mask generator's largest intermediate
#: (81 bumps x 75 x 75 floats per mask at 64 px, 1.8 MB) within this: at 8 images x 3 areas (44 MB) a pass no longer
#: fit the caches and cost 2.2-3.3x more per image than 1-4 images at once, with the same maps (2 images at 64 px;
#: benchmarks/performance/RESULTS.md, pass_size.py, issue 32)
CPU_MASK_PASS_BYTES = 12 * 2**20


def gaussian_smooth(x: Tensor, sigma: float, padding_mode: str = "constant") -> Tensor:
    """Separable Gaussian blur of N x C x H x W, kernel radius ceil(4 sigma), normalised to sum 1 (TorchRay's
    ``imsmooth``). ``padding_mode``: ``"constant"`` (zeros, as TorchRay; 0 is mid-grey in [-1, 1] units) or
    ``"replicate"``."""
    if sigma <= 0:
        return x.clone()
    r = math.ceil(4 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device) / (math.sqrt(2.0) * sigma)
    g = torch.exp(-t * t)
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode=padding_mode) if padding_mode != "constant" else F.pad(x, (r, r, r, r))
    y = F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def blur_pyramid(x: Tensor, levels: int, max_blur: float) -> Tensor:
    """N x L x C x H x W: level l blurred with sigma max_blur (1 - l / (L - 1)); the last level is x itself."""
    return torch.stack([gaussian_smooth(x, float((1 - s) * max_blur)) for s in torch.linspace(0, 1, levels)], 1)


def apply_pyramid(pyramid: Tensor, mask: Tensor) -> Tensor:
    """Per pixel, the pyramid level picked by ``mask`` in [0, 1] (1 = the image, 0 = the most blurred), linearly
    interpolated between levels. pyramid N x L x C x H x W, mask N x 1 x H x W -> N x C x H x W."""
    levels = pyramid.shape[1]
    w = mask.unsqueeze(1) * (levels - 1)  # N x 1 x 1 x H x W
    k = w.floor().clamp(max=levels - 1)
    w = w - k
    k = k.long().expand(-1, 1, pyramid.shape[2], -1, -1)
    y0 = torch.gather(pyramid, 1, k)
    y1 = torch.gather(pyramid, 1, (k + 1).clamp(max=levels - 1))
    return ((1 - w) * y0 + w * y1).squeeze(1)


class SmoothMaskGenerator:
    """TorchRay's smooth mask parametrisation (``MaskGenerator``, softmax pooling): parameters on a grid of
    ``step`` px; each output pixel is the smooth maximum (softmax with coldness 20) of the Gaussian-like bumps
    k(d / sigma) = exp(-2 relu(d / sigma - 0.5)^2) of the grid parameters within reach, times the parameters.

    ``generate(params)`` -> (mask cropped to ``shape``, full mask with margin), both K x 1 x h x w."""

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, coldness: float = 20.0):
        self.shape, self.step, self.sigma, self.coldness = tuple(shape), int(step), float(sigma), float(coldness)
        self.margin = self.sigma
        self.padding = 1 + math.ceil((self.margin + self.sigma) / self.step)
        self.radius = 1 + math.ceil(self.sigma / self.step)
        self.shape_in = [math.ceil(z / self.step) for z in self.shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [self.step * z for z in self.shape_mid]
        self.shape_out = [z - self.step + 1 for z in self.shape_up]
        k = 2 * self.radius + 1
        self.weight = torch.zeros((1, k * k, *self.shape_out))
        # float32 ratios as TorchRay computes them (a double ratio moves the floor below at a few cell borders)
        step_inv = [torch.tensor(zm, dtype=torch.float32) / torch.tensor(zo, dtype=torch.float32) for zm, zo in zip(self.shape_mid, self.shape_up)]
        uy, ux = torch.meshgrid(torch.arange(self.shape_out[0], dtype=torch.float32),
                                torch.arange(self.shape_out[1], dtype=torch.float32), indexing="ij")
        for ky in range(k):
            for kx in range(k):
                iy = torch.floor(step_inv[0] * uy) + ky - self.padding
                ix = torch.floor(step_inv[1] * ux) + kx - self.padding
                delta = torch.sqrt((uy - (self.margin + self.step * iy)) ** 2 + (ux - (self.margin + self.step * ix)) ** 2)
                self.weight[0, ky * k + kx] = torch.exp(-2 * ((delta / self.sigma - 0.5).clamp(min=0) ** 2))

    def generate(self, params: Tensor) -> tuple[Tensor, Tensor]:
        k = 2 * self.radius + 1
        m = F.unfold(params, (k, k), padding=(self.padding,) * 2).reshape(len(params), -1, *self.shape_mid)
        m = F.interpolate(m, size=self.shape_up, mode="nearest")
        m = F.pad(m, (0, -self.step + 1, 0, -self.step + 1))
        m = self.weight.to(m.device, m.dtype) * m
        m = (m * F.softmax(self.coldness * m, dim=1)).sum(1, keepdim=True).clamp(0, 1)
        o = round(self.margin)
        return m[:, :, o : o + self.shape[0], o : o + self.shape[1]], m


def _scaled(px_at_224: float, size: int) -> float:
    return px_at_224 * size / _REF_SIZE


class ExtremalPerturbationExplainer(Explainer):
    """Extremal Perturbation (Fong, Patrick & Vedaldi, ICCV 2019), blur perturbation, preservation game.

    Args:
        areas: mask areas as fractions of the image; the map is the sum of the masks over them (the paper's
            pointing-game setting uses 0.025, 0.05, 0.1, 0.2).
        max_iter: SGD iterations (lr 0.01, momentum 0.9, dampening 0.9). TorchRay's default is 800 with 4 areas; 300
            with 3 areas here (3 x 300 classifier passes per image, the order of medXGAN's 75 inversion + 150 mask steps:
            the demo's evaluation explains each image 4 times). The area weight's growth is compressed to the same
            schedule: from ``regul_weight`` to ``regul_weight`` x 1.0035^800 over ``max_iter`` iterations.
        step, sigma, max_blur: mask grid step, bump radius and largest blur in px; default TorchRay's 7 / 21 / 20
            at 224 px scaled with the image height (at least 1 / 1 / 1).
        levels: blur pyramid levels (8). regul_weight: area-constraint weight at the start (300), grown by
            to x 1.0035^800 as in TorchRay (``regul_growth``: a fixed factor per iteration instead; TorchRay's is 1.0035).
            jitter: mirror the perturbed image every other iteration (TorchRay's default;
            off here: it assumes a mirror-invariant classifier, and a medical classifier may read the side of the body).

    Extras: ``masks`` (N x K x H x W, one per area), ``areas``.
    """

    name = "extremal-perturbation"

    def __init__(self, classifier: Any, *, areas: Sequence[float] = (0.025, 0.05, 0.1), max_iter: int = 300, step: int | None = None,
                 sigma: float | None = None, max_blur: float | None = None, levels: int = 8, regul_weight: float = 300.0,
                 jitter: bool = False, regul_growth: float | None = None, **kw: Any):
        super().__init__(classifier, **kw)
        areas = tuple(float(a) for a in areas)
        if not areas or any(not (0 < a < 1) for a in areas):
            raise MedxganError(f"areas {areas}: every area must be in (0, 1)", arg="areas")
        if max_iter < 1 or levels < 2:
            raise MedxganError(f"max_iter {max_iter} / levels {levels}: need max_iter >= 1 and levels >= 2")
        self.areas, self.max_iter, self.levels = areas, int(max_iter), int(levels)
        self.step, self.sigma, self.max_blur = step, sigma, max_blur
        self.regul_weight, self.jitter = float(regul_weight), bool(jitter)
        self.regul_growth = regul_growth

    def settings_for(self, size: int) -> tuple[int, float, float]:
        """(step, sigma, max_blur) in px for images of height ``size``."""
        step = self.step if self.step is not None else max(1, round(_scaled(7, size)))
        sigma = self.sigma if self.sigma is not None else max(1.0, _scaled(21, size))
        blur = self.max_blur if self.max_blur is not None else max(1.0, _scaled(20, size))
        return int(step), float(sigma), float(blur)

    def images_per_pass(self, gen: SmoothMaskGenerator, n: int, device: torch.device) -> int:
        """Images optimised together: all ``n`` on a GPU; on a CPU as many as keep the mask generator's largest
        intermediate (areas x grid bumps x H' x W' floats per image) within :data:`CPU_MASK_PASS_BYTES`."""
        if device.type != "cpu":
            return n
        per_image = len(self.areas) * gen.weight.numel() * gen.weight.element_size()
        return max(1, min(n, CPU_MASK_PASS_BYTES // per_image))

    def attribute(self, images: Tensor) -> tuple[Tensor, dict[str, Any]]:
        step, sigma, max_blur = self.settings_for(images.shape[-2])
        gen = SmoothMaskGenerator(tuple(images.shape[-2:]), step, sigma)
        per_pass = self.images_per_pass(gen, images.shape[0], images.device)
        parts = [self._optimise(images[i : i + per_pass], gen, max_blur) for i in range(0, images.shape[0], per_pass)]
        return torch.cat([m for m, _ in parts]), {"masks": torch.cat([e for _, e in parts]), "areas": list(self.areas)}

    def _optimise(self, images: Tensor, gen: SmoothMaskGenerator, max_blur: float) -> tuple[Tensor, Tensor]:
        """(map N x 1 x H x W, masks N x K x H x W on the CPU) of ``images``: every (image, area) mask is optimised on its
        own (its own reward, area term and SGD state), so the images of a pass do not change each other's masks."""
        n, k = images.shape[0], len(self.areas)
        pyramid = blur_pyramid(images.detach(), self.levels, max_blur).repeat_interleave(k, 0)  # (N K) x L x C x H x W
        params = torch.ones(n * k, 1, *gen.shape_in, device=images.device)
        max_area = int(gen.shape_out[0] * gen.shape_out[1])
        reference = torch.ones(n * k, max_area, device=images.device)
        for j, a in enumerate(self.areas):  # TorchRay's ranking target: the sorted mask is 0 on 1 - a, 1 on a
            reference[j::k, : int(max_area * (1 - a))] = 0
        opt = torch.optim.SGD([params], lr=0.01, momentum=0.9, dampening=0.9)
        regul_weight = self.regul_weight
        growth = self.regul_growth or 1.0035 ** (800.0 / self.max_iter)  # TorchRay's 800-iteration schedule, compressed to max_iter
        with frozen(self.classifier), torch.enable_grad():
            for t in range(self.max_iter):
                params.requires_grad_(True)
                mask, full = gen.generate(params)
                last = mask.detach()  # TorchRay returns the mask of the last iteration's forward pass
                x = apply_pyramid(pyramid, mask)
                if self.jitter and t % 2 == 0:
                    x = torch.flip(x, dims=(3,))
                reward = self.classifier.logit(x).float()
                regul = ((full.reshape(n * k, -1).sort(dim=1)[0] - reference) ** 2).mean(1) * regul_weight
                opt.zero_grad(set_to_none=True)
                (regul - reward).sum().backward()
                opt.step()
                params.data.clamp_(0, 1)
                regul_weight *= growth
        masks = last.reshape(n, k, *images.shape[-2:])
        return masks.sum(1, keepdim=True), masks.cpu()


def tv_sum(mask: Tensor, beta: float) -> Tensor:
    """Per image sum |dM/dy|^beta + sum |dM/dx|^beta (N x 1 x h x w -> N), Fong & Vedaldi's TV prior."""
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().pow(beta).flatten(1).sum(1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().pow(beta).flatten(1).sum(1)
    return dy + dx


class MeaningfulPerturbationExplainer(Explainer):
    """Meaningful Perturbation (Fong & Vedaldi, ICCV 2017), the deletion game with a blur in-fill.

    Minimises, per image, ``p(pos | m x + (1 - m) blur(x)) + l1 sum(1 - m) + l_tv sum |grad m|^beta`` over a mask m
    (1 = keep, clamped to [0, 1]) on a 28 x 28 grid (the paper's; fewer cells for smaller images), upsampled bilinearly
    to the image, from m = 1 (nothing deleted); the penalties are taken on the upsampled mask, as for the paper's
    224 px images (l1 1e-4, l_tv 1e-2, beta 3), and rescaled to the image size so that a region of the same share
    of the image costs the same: the area term by 224^2 / (H W), the boundary term by 224 / sqrt(H W). Without the
    paper's mask jitter and noise (a deterministic baseline).

    Args:
        steps, lr: Adam iterations and step size (the paper: 300, 0.1).
        cells: mask grid cells per side (28). blur_sigma: the in-fill's blur in px (10 at 224 px, scaled with the image
            height).

    Extras: ``masks`` (N x 1 x H x W, the kept-region mask m), ``prob_deleted`` (p(pos) of the final deletion).
    """

    name = "meaningful-perturbation"

    def __init__(self, classifier: Any, *, steps: int = 300, lr: float = 0.1, l1: float = 1e-4, tv: float = 1e-2,
                 beta: float = 3.0, cells: int = 28, blur_sigma: float | None = None, **kw: Any):
        super().__init__(classifier, **kw)
        if steps < 1 or cells < 1:
            raise MedxganError(f"steps {steps} / cells {cells}: both must be >= 1")
        self.steps, self.lr, self.l1, self.tv, self.beta, self.cells = int(steps), float(lr), float(l1), float(tv), float(beta), int(cells)
        self.blur_sigma = blur_sigma

    def attribute(self, images: Tensor) -> tuple[Tensor, dict[str, Any]]:
        h, w = images.shape[-2:]
        sigma = self.blur_sigma if self.blur_sigma is not None else max(1.0, _scaled(10, h))
        x = images.detach()
        blurred = gaussian_smooth(x, float(sigma), padding_mode="replicate")
        cells = (min(h, self.cells), min(w, self.cells))
        # the mask itself is the parameter, clamped to [0, 1] after each step, starting from 1 (nothing deleted), as in
        # the paper's implementation (a sigmoid parametrisation saturates at the start)
        m = torch.ones((x.shape[0], 1, *cells), device=x.device, requires_grad=True)
        l1 = self.l1 * _REF_SIZE**2 / (h * w)
        tv = self.tv * _REF_SIZE / math.sqrt(h * w)
        opt = torch.optim.Adam([m], lr=self.lr)

        def up(mask: Tensor) -> Tensor:
            return F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)

        with frozen(self.classifier), torch.enable_grad():
            for _ in range(self.steps):
                mu = up(m)
                p = self.classifier.prob(mu * x + (1 - mu) * blurred).float()
                loss = p + l1 * (1 - mu).flatten(1).sum(1) + tv * tv_sum(mu, self.beta)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                m.data.clamp_(0, 1)
        with torch.no_grad():
            mu = up(m.detach())
            p = self.classifier.prob(mu * x + (1 - mu) * blurred).float()
        return 1 - mu, {"masks": mu.cpu(), "prob_deleted": p.cpu()}


def rise_masks(n_masks: int, size: tuple[int, int], *, cells: int = 8, p: float = 0.5, seed: int = 0) -> Tensor:
    """RISE's random masks (n_masks x 1 x H x W in [0, 1]): a ``cells`` x ``cells`` binary grid (each cell kept with
    probability p), upsampled bilinearly to (cells + 1) x the cell size and cropped at a random shift."""
    h, w = size
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    g = torch.Generator().manual_seed(int(seed))
    grid = (torch.rand(n_masks, 1, cells, cells, generator=g) < p).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False).clamp(0, 1)
    dy = torch.randint(0, ch, (n_masks,), generator=g)
    dx = torch.randint(0, cw, (n_masks,), generator=g)
    return torch.stack([up[i, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w] for i in range(n_masks)])


def rise_saliency(score_fn: Any, images: Tensor, masks: Tensor, p: float, *, fill: float = 0.0, batch: int = 256) -> Tensor:
    """sum_i score(x M_i + fill (1 - M_i)) M_i / (N p): N x 1 x H x W for images N x C x H x W and masks K x 1 x H x W."""
    masks = masks.to(images.device, images.dtype)
    out = torch.zeros(images.shape[0], 1, *images.shape[-2:], device=images.device, dtype=images.dtype)
    with torch.no_grad():
        for i in range(images.shape[0]):
            x = images[i : i + 1]
            for s in range(0, len(masks), batch):
                m = masks[s : s + batch]
                scores = score_fn(x * m + fill * (1 - m)).float().view(-1, 1, 1, 1)
                out[i] += (scores * m).sum(0)
    return out / (len(masks) * p)


class RISEExplainer(Explainer):
    """RISE (Petsiuk, Das & Saenko, BMVC 2018): the p(pos)-weighted mean of random masks.

    Args:
        n_masks: random masks (the paper: 4000-8000 at 224 px with a 7 x 7 grid; 1000 forward passes by default here at
            64 px, the order of medXGAN's classifier passes per image).
        cells: the binary grid's size s (7-8 in the paper). p: keep probability. seed: of the masks (the same masks
            for every image). fill: value of the masked-out pixels (0 = mid-grey). masks: fixed masks K x 1 x H x W
            instead of random ones (tests). rows_per_pass: masked copies per classifier pass; None (default): 256 on a
            GPU, ``CPU_ROWS_PER_PASS`` on a CPU (:func:`medxgan.explain.base.rows_per_pass`).
    """

    name = "rise"

    def __init__(self, classifier: Any, *, n_masks: int = 1000, cells: int = 8, p: float = 0.5, seed: int = 0, fill: float = 0.0,
                 masks: Tensor | None = None, rows_per_pass: int | None = None, **kw: Any):
        super().__init__(classifier, **kw)
        if n_masks < 1 or cells < 1 or not (0 < p < 1):
            raise MedxganError(f"n_masks {n_masks} / cells {cells} / p {p}: need n_masks >= 1, cells >= 1, 0 < p < 1")
        self.n_masks, self.cells, self.p, self.seed, self.fill = int(n_masks), int(cells), float(p), int(seed), float(fill)
        self.masks = masks
        if rows_per_pass is not None and int(rows_per_pass) < 1:
            raise MedxganError(f"rows_per_pass {rows_per_pass}: must be >= 1 (None: sized for the device)", arg="rows_per_pass")
        self.rows_per_pass = None if rows_per_pass is None else int(rows_per_pass)
        self._cache: dict[tuple[int, int], Tensor] = {}

    def masks_for(self, size: tuple[int, int]) -> Tensor:
        if self.masks is not None:
            return self.masks
        if size not in self._cache:
            self._cache[size] = rise_masks(self.n_masks, size, cells=self.cells, p=self.p, seed=self.seed)
        return self._cache[size]

    def attribute(self, images: Tensor) -> Tensor:
        with frozen(self.classifier):
            return rise_saliency(self.classifier.prob, images, self.masks_for(tuple(images.shape[-2:])), self.p, fill=self.fill,
                                 batch=self.rows_per_pass or rows_per_pass(images.device, 256))


PERTURBATION_METHODS: dict[str, Any] = {
    "extremal-perturbation": ExtremalPerturbationExplainer,
    "meaningful-perturbation": MeaningfulPerturbationExplainer,
    "rise": RISEExplainer,
}
