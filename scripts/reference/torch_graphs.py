"""PyTorch references for kiln's graph models: branches, nesting, repetition, decoders.

Each model below is the PyTorch twin of a `kiln::model!` in tests/reference.rs, built
from PyTorch's own modules so that its state dict has exactly the names kiln gives its
parameters (`mixed.b3.2.weight`, `layer1.0.block.main.1.running_var`). For each, in
float64:

- the state dict, saved with safetensors (`tests/fixtures/torch_<model>.safetensors`),
  batch norm's running statistics drawn at random so that inference uses them;
- an input batch, the inference output (`eval()`), and, in training mode, the output,
  dL/d(parameter) and dL/d(input) for L = sum(upstream * output) with a random
  `upstream`, and the running statistics after that step.

Run from the repository root, in an environment with torch and safetensors (see
docs/testing.md):

    python scripts/reference/torch_graphs.py

Writes tests/fixtures/torch_graphs.json and one safetensors file per model.
"""

import json
import pathlib
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from torch import nn

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.set_default_dtype(torch.float64)
torch.manual_seed(20261129)


class Branches(nn.Module):
    """kiln's `Concat`, `Add` and `Mul` blocks: every branch reads the input, the outputs
    merge. Branches are submodules named as in the DSL; `{}` is `nn.Identity`."""

    def __init__(self, merge, **branches):
        super().__init__()
        self.merge = merge
        self.order = list(branches)
        for name, module in branches.items():
            self.add_module(name, module)

    def forward(self, x):
        outs = [getattr(self, name)(x) for name in self.order]
        if self.merge == "concat":
            return torch.cat(outs, dim=1)  # channels of [N, C, H, W], features of [N, F]
        total = outs[0]
        for out in outs[1:]:
            total = total + out if self.merge == "add" else total * out
        return total


def seq(*layers, **named):
    """`{ .. }`: unnamed layers are named by position, as kiln and nn.Sequential do."""
    if named:
        return nn.Sequential(OrderedDict(named))
    return nn.Sequential(*layers)


def cnn():
    # kiln: input: [1, 8, 8], conv: Conv2d(3, kernel = 3, padding = 1), Relu, MaxPool2d(2),
    #       bn: BatchNorm2d, Flatten, fc: Dense(4)
    return seq(conv=nn.Conv2d(1, 3, 3, padding=1), relu=nn.ReLU(), pool=nn.MaxPool2d(2),
               bn=nn.BatchNorm2d(3), flat=nn.Flatten(), fc=nn.Linear(48, 4)), (3, 1, 8, 8)


def inception():
    # kiln: input: [2, 5, 5], mixed: Concat {
    #   b1: { Conv2d(2, kernel = 1), Relu },
    #   b3: { Conv2d(2, kernel = 1), Relu, Conv2d(3, kernel = 3, padding = 1) },
    #   pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(2, kernel = 1) }, skip: {} },
    #   GlobalAvgPool, out: Dense(3)
    mixed = Branches(
        "concat",
        b1=seq(nn.Conv2d(2, 2, 1), nn.ReLU()),
        b3=seq(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1)),
        pool=seq(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(2, 2, 1)),
        skip=nn.Identity(),
    )
    return seq(mixed=mixed, gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), out=nn.Linear(9, 3)), (2, 2, 5, 5)


def resnet_block():
    # kiln: input: [2, 6, 6], down: Add {
    #   main: { Conv2d(4, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
    #           Conv2d(4, kernel = 3, padding = 1), BatchNorm2d },
    #   shortcut: { Conv2d(4, kernel = 1, stride = 2), BatchNorm2d } },
    #   Relu, GlobalAvgPool, fc: Dense(3)
    down = Branches(
        "add",
        main=seq(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                 nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
        shortcut=seq(nn.Conv2d(2, 4, 1, stride=2), nn.BatchNorm2d(4)),
    )
    return seq(down=down, relu=nn.ReLU(), gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
               fc=nn.Linear(4, 3)), (3, 2, 6, 6)


def unet():
    # kiln: input: [1, 8, 8], enc: { Conv2d(4, kernel = 3, padding = 1), Relu },
    #   level: Concat { skip: {}, down: { MaxPool2d(2), Conv2d(8, kernel = 3, padding = 1), Relu,
    #     up: Concat {
    #       learnt: ConvTranspose2d(4, kernel = 3, stride = 2, padding = 1, output_padding = 1),
    #       smooth: { Upsample(2, mode = bilinear), Conv2d(2, kernel = 1) } } } },
    #   dec: Conv2d(1, kernel = 3, padding = 1)
    up = Branches(
        "concat",
        learnt=nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
        smooth=seq(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(8, 2, 1)),
    )
    down = seq(**{"0": nn.MaxPool2d(2), "1": nn.Conv2d(4, 8, 3, padding=1), "2": nn.ReLU(), "up": up})
    level = Branches("concat", skip=nn.Identity(), down=down)
    return seq(enc=seq(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), level=level,
               dec=nn.Conv2d(10, 1, 3, padding=1)), (2, 1, 8, 8)


def conv_transpose():
    # kiln: input: [3, 4, 5],
    #   up: ConvTranspose2d(2, kernel = 3, stride = 2, padding = 1, output_padding = 1), Tanh,
    #   up2: ConvTranspose2d(2, kernel = (2, 3), stride = (1, 2), padding = (0, 1),
    #                        dilation = (2, 1), output_padding = (0, 1), bias = false)
    return seq(up=nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), tanh=nn.Tanh(),
               up2=nn.ConvTranspose2d(2, 2, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1),
                                      output_padding=(0, 1), bias=False)), (2, 3, 4, 5)


def upsample():
    # kiln: input: [2, 3, 4], Upsample((2, 3)), Upsample(2, mode = bilinear),
    #   Upsample((3, 2), mode = bilinear), mix: Conv2d(1, kernel = 1)
    return seq(**{
        "0": nn.Upsample(scale_factor=(2, 3), mode="nearest"),
        "1": nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        "2": nn.Upsample(scale_factor=(3, 2), mode="bilinear", align_corners=False),
        "mix": nn.Conv2d(2, 1, 1),
    }), (2, 2, 3, 4)


def nested():
    # kiln: input: [6], outer: Add { skip: {}, deep: {
    #   cat: Concat { p: Dense(3), q: Mul { r: Dense(3), s: { Dense(3), Sigmoid } } }, Tanh } },
    #   head: Dense(3)
    q = Branches("mul", r=nn.Linear(6, 3), s=seq(nn.Linear(6, 3), nn.Sigmoid()))
    cat = Branches("concat", p=nn.Linear(6, 3), q=q)
    outer = Branches("add", skip=nn.Identity(), deep=seq(cat=cat, **{"1": nn.Tanh()}))
    return seq(outer=outer, head=nn.Linear(6, 3)), (3, 6)


def stages():
    # kiln: input: [1, 6, 6], stem: Conv2d(3, kernel = 3, padding = 1), Relu,
    #   layer1: Repeat(2) { block: Add {
    #     main: { Conv2d(3, kernel = 3, padding = 1), BatchNorm2d, Relu, Conv2d(3, kernel = 3, padding = 1) },
    #     skip: {} }, Relu },
    #   GlobalAvgPool, head: Dense(3)
    def repetition():
        main = seq(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
        return seq(block=Branches("add", main=main, skip=nn.Identity()), **{"1": nn.ReLU()})

    return seq(stem=nn.Conv2d(1, 3, 3, padding=1), relu=nn.ReLU(), layer1=seq(repetition(), repetition()),
               gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=nn.Linear(3, 3)), (3, 1, 6, 6)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block (identity shortcut), kiln's `block Basic`."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def reused():
    # kiln: block Basic(channels) { Residual { conv1: Conv2d(channels, kernel = 3, padding = 1,
    #   bias = false), bn1: BatchNorm2d, Relu, conv2: .., bn2: BatchNorm2d }, Relu }
    #   input: [2, 6, 6], layer1: { Basic(2), Basic(2) }, widen: Conv2d(3, kernel = 1),
    #   layer2: { Basic(3) }, GlobalAvgPool, fc: Dense(3)
    return seq(layer1=seq(BasicBlock(2), BasicBlock(2)), widen=nn.Conv2d(2, 3, 1), layer2=seq(BasicBlock(3)),
               gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(3, 3)), (3, 2, 6, 6)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def case(name, build):
    net, x_shape = build()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(5)
    state = OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    save_file(state, str(FIXTURES / f"torch_{name}.safetensors"))
    x = torch.rand(*x_shape) * 2 - 1
    net.eval()
    with torch.no_grad():
        y_eval = net(x)
    net.train()
    x.requires_grad_(True)
    y = net(x)
    upstream = torch.rand(*y.shape) * 2 - 1
    (y * upstream).sum().backward()
    params = dict(net.named_parameters())
    return dict(
        model=name,
        state_dict=list(state),
        x=flat(x),
        y_eval=flat(y_eval),
        y=flat(y),
        upstream=flat(upstream),
        grads={k: flat(p.grad) for k, p in params.items()},
        grad_x=flat(x.grad),
        buffers_after={k: flat(v) for k, v in net.state_dict().items() if k not in params},
    )


cases = [case(name, build) for name, build in [
    ("cnn", cnn), ("inception", inception), ("resnet_block", resnet_block), ("unet", unet),
    ("conv_transpose", conv_transpose), ("upsample", upsample), ("nested", nested), ("stages", stages),
    # Last, so that the draws of the models above stay as they were.
    ("reused", reused),
]]
(FIXTURES / "torch_graphs.json").write_text(json.dumps(
    {"generator": "scripts/reference/torch_graphs.py", "torch": torch.__version__, "cases": cases},
    indent=1) + "\n")
print("wrote", FIXTURES / "torch_graphs.json")
