"""Built-in binary classifiers. Both output 2 logits (no softmax: the authors' code applied softmax
and then CrossEntropyLoss on top, a double softmax we do not copy)."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.runtime.errors import MedxganError


class _MaxPool2x2Function(torch.autograd.Function):
    """2 x 2 max-pooling, stride 2, with exactly aten's values and gradients: aten's own kernels, the forward run on a
    channels-last copy. Why: aten's CPU max-pool forward for NCHW tensors is several times slower than for channels-last
    ones (issue 32: 6.4 vs 2.5 ms forward + backward for 8 x 16 x 62 x 62, copy included, torch 2.13, one thread) and was
    ~15-20 % of every paper-cnn forward/backward, i.e. of the inversion, the minimal-mask search and every gradient
    baseline. Both kernels take the first maximum of a window (a NaN wins) and return the same flat h * W + w indices,
    so outputs and gradients are identical; the output and the input's gradient stay NCHW-contiguous."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), [2, 2], [2, 2])
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with the same outputs and gradients, faster on the CPU (see :class:`_MaxPool2x2Function`).
    Keeps the class (state dicts, fingerprints, layer searches unchanged); TorchScript gets aten's op."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or x.dim() != 4 or x.device.type != "cpu":
            return F.max_pool2d(x, 2)
        return self._fast(x)

    @torch.jit.unused
    def _fast(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxPool2x2Function.apply(x)


class PaperCNN(nn.Module):
    """The medXGAN paper's brain-MRI classifier for 64x64 inputs: three conv blocks (16/32/32 channels;
    conv -> ReLU -> BN -> max-pool -> dropout 0.2), then a linear head on the 32x4x4 features."""

    __jit_unused_properties__ = ["gradcam_layer"]  # keeps the model scriptable with torch.jit.script

    def __init__(self, in_channels: int = 1, image_size: int = 64, dropout: float = 0.2):
        super().__init__()
        if image_size != 64:
            raise MedxganError(f"size {image_size}: architecture paper-cnn is built for 64x64 inputs (use size 64, or architecture "
                               "resnet-small for other sizes)", arg="size")

        def block(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k), nn.ReLU(inplace=True), nn.BatchNorm2d(cout), MaxPool2x2(), nn.Dropout(dropout))

        self.features = nn.Sequential(block(in_channels, 16, 3), block(16, 32, 6), block(32, 32, 6))
        self.head = nn.Linear(32 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    @property
    def gradcam_layer(self) -> nn.Module:
        """The activated output of the last conv layer (conv -> ReLU -> BN), before pooling."""
        return self.features[-1][2]


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


SMALL_RESNET_MIN_SIZE = 16


class SmallResNet(nn.Module):
    """A small ResNet-style network for 64-256 px: a 3x3 stem (stride 2 from 64 px, plus a max-pool
    from 160 px), four stages of one basic block
    (widths w, 2w, 4w, 8w; stride 2 from the second stage on), global average pooling, linear head."""

    __jit_unused_properties__ = ["gradcam_layer"]

    def __init__(self, in_channels: int = 1, image_size: int = 128, width: int = 16):
        super().__init__()
        # Downsample early so that the cost stays small at 64-256 px (laptop CPUs).
        if image_size < SMALL_RESNET_MIN_SIZE:  # three stride-2 stages leave less than 2x2 pixels: nothing left to classify
            raise MedxganError(f"size {image_size}: architecture resnet-small needs inputs of at least {SMALL_RESNET_MIN_SIZE}x"
                               f"{SMALL_RESNET_MIN_SIZE} pixels", arg="size")
        stem_stride = 2 if image_size >= 64 else 1
        stem = [nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if image_size >= 160:
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], width
        for i, w in enumerate(widths):
            layers.append(_BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)).mean(dim=(2, 3)))

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last residual block (its output is the activated sum the head pools)."""
        return self.layers[-1]


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"paper-cnn": PaperCNN, "resnet-small": SmallResNet}


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    if name not in ARCHITECTURES:
        raise MedxganError(f"arch {name}: unknown architecture (choose from {', '.join(ARCHITECTURES)})", arg="arch")
    return ARCHITECTURES[name](**kwargs)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last Conv2d module of a model."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MedxganError("classifier has no Conv2d layer: Grad-CAM needs one (pass a layer explicitly)")
    return convs[-1]


# Layers that act elementwise / per channel: they belong to the conv layer they follow.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.PReLU, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.Identity)


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM target: the *activated* output of the last convolutional layer.

    Grad-CAM is defined on the feature maps the head sees (after the layer's non-linearity), as in
    pytorch-grad-cam's `model.layer4[-1]` or VGG's last ReLU. Taking the raw Conv2d output before its
    ReLU zeroes the gradient wherever the unit is inactive, and on the paper CNN gave all-zero maps for
    most positives. Resolution order: a `gradcam_layer` attribute on the model; the last residual
    block (a child module holding the last conv and producing the activated sum); the last Conv2d
    extended over the elementwise layers (ReLU, BN, ...) that directly follow it in its Sequential.
    """
    declared = getattr(model, "gradcam_layer", None)
    if isinstance(declared, nn.Module):
        return declared
    conv = last_conv_layer(model)
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            if conv in children:
                i = children.index(conv)
                while i + 1 < len(children) and isinstance(children[i + 1], _ELEMENTWISE):
                    i += 1
                return children[i]
    # conv is an attribute of a custom block (e.g. a ResNet basic block): use the innermost such block
    # that is a direct child of a Sequential, whose output is the activated block output
    for module in reversed(list(model.modules())):
        if isinstance(module, nn.Sequential):
            for child in reversed(list(module.children())):
                if any(m is conv for m in child.modules()) and child is not conv:
                    return child
    return conv


# Modules whose output is not "a block's output" for Grad-CAM: pooling shrinks the map the head sees,
# dropout and flatten only pass it on.
_NOT_FEATURES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity)


def is_scripted(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def find_gradcam_layer(model: nn.Module, run_probe: Callable[[], Any], shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the Grad-CAM target found by running ``run_probe()`` (one forward pass of the
    model, e.g. the adapter on a probe batch) with a forward hook on every submodule.

    The choice: a ``gradcam_layer`` attribute the model declares; otherwise the module that finishes
    *last* among those whose output is a 4-D map with more than one spatial position, skipping
    pooling / dropout / flatten. A block finishes after everything inside it, so this is the last
    block's output (MONAI/torchvision ResNet ``layer4``; MONAI DenseNet the activated ``features``
    output), never a shortcut BatchNorm or an inner conv, and it is the deepest map before the
    global pooling. TorchScript modules cannot take forward hooks (a torch limitation), so neither
    this search nor Captum's LayerGradCam works on them: refused in one line. ``shapes`` (a dict) receives
    every hooked module's output shape on the probe.
    """
    declared = getattr(model, "gradcam_layer", None)
    if isinstance(declared, nn.Module):
        name = next((n for n, m in model.named_modules() if m is declared), "gradcam_layer")
        return name, declared
    if is_scripted(model):
        raise MedxganError("gradcam: the classifier is a TorchScript module, and TorchScript modules take no forward hooks (a torch "
                           "limitation), which Grad-CAM needs; use a torch.export .pt2 file or package.module:factory, or leave gradcam "
                           "out (--methods)", arg="gradcam_layer")
    order: dict[str, int] = {}
    shapes = {} if shapes is None else shapes
    counter = [0]

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            counter[0] += 1
            order[name] = counter[0]
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in named]
    try:
        with torch.no_grad():
            run_probe()
    finally:
        for h in handles:
            h.remove()
    modules = dict(named)
    spatial = [n for n in order if len(shapes[n]) == 4 and shapes[n][2] * shapes[n][3] > 1 and not isinstance(modules[n], _NOT_FEATURES)]
    if not spatial:
        raise MedxganError("gradcam: no submodule of the classifier outputs a spatial feature map (N x C x H x W with H x W > 1) "
                           "on a probe batch; Grad-CAM needs a convolutional classifier", arg="gradcam_layer")
    name = max(spatial, key=lambda n: order[n])
    return name, modules[name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), or a one-line refusal listing
    the names that do exist near it."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    tops = [n for n in modules if n and "." not in n]
    near = [n for n in modules if n and name and n.startswith(name.split(".")[0] + ".")][:12]
    raise MedxganError(f"gradcam_layer {name}: the classifier has no such module (top-level modules: {', '.join(tops)}"
                       + (f"; under {name.split('.')[0]}: {', '.join(near)}" if near else "") + ")", arg="gradcam_layer")
