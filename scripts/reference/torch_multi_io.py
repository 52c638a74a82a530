"""PyTorch references for kiln's models with several inputs and outputs.

- `two_inputs`: an image and a feature vector, a convolutional trunk on the image
  concatenated with the features, one head. kiln takes both inputs packed into one
  vector per sample (the image's 72 values, then the 3 features); the fixture's `x` and
  `grad_x` are packed that way.
- `two_outputs`: one trunk, two heads, trained on cross-entropy of the first plus 0.3
  times cross-entropy of the second (mean over the batch each, as PyTorch's default).
  The fixture holds the loss, every parameter's gradient and the input's.

Each model is built from PyTorch's own modules with kiln's parameter names, its state
dict saved with safetensors (`tests/fixtures/torch_<model>.safetensors`), in float64.
Run from the repository root, in an environment with torch and safetensors (see
docs/testing.md):

    python scripts/reference/torch_multi_io.py

Writes tests/fixtures/torch_multi_io.json and one safetensors file per model.
"""

import json
import pathlib
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from torch import nn

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.set_default_dtype(torch.float64)
torch.manual_seed(20261206)


class TwoInputs(nn.Module):
    """`trunk: image >> { Conv2d(3, kernel = 3), Relu, Flatten }`,
    `joined: Concat(trunk, meta) >> { Dense(8), Tanh }`, `outputs: { y: joined >> Dense(4) }`."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten())
        self.joined = nn.Sequential(nn.Linear(51, 8), nn.Tanh())
        self.y = nn.Linear(8, 4)

    def forward(self, image, meta):
        return self.y(self.joined(torch.cat([self.trunk(image), meta], dim=1)))


class TwoOutputs(nn.Module):
    """`trunk: x >> { Dense(6), Tanh }`, `outputs: { a: trunk >> Dense(3), b: trunk >> Dense(2) }`."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        h = self.trunk(x)
        return self.a(h), self.b(h)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def save(name, net):
    state = OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    save_file(state, str(FIXTURES / f"torch_{name}.safetensors"))


def two_inputs():
    net = TwoInputs()
    save("two_inputs", net)
    batch = 3
    image = (torch.rand(batch, 2, 6, 6) * 2 - 1).requires_grad_(True)
    meta = (torch.rand(batch, 3) * 2 - 1).requires_grad_(True)
    y = net(image, meta)
    upstream = torch.rand(*y.shape) * 2 - 1
    (y * upstream).sum().backward()
    packed = lambda a, b: torch.cat([a.reshape(batch, -1), b.reshape(batch, -1)], dim=1)
    params = dict(net.named_parameters())
    return dict(
        model="two_inputs",
        x=flat(packed(image, meta)),
        y_eval=flat(y),
        y=flat(y),
        upstream=flat(upstream),
        grads={k: flat(p.grad) for k, p in params.items()},
        grad_x=flat(packed(image.grad, meta.grad)),
        buffers_after={},
    )


def two_outputs():
    net = TwoOutputs()
    save("two_outputs", net)
    batch = 4
    x = (torch.rand(batch, 5) * 2 - 1).requires_grad_(True)
    labels_a = torch.tensor([2, 0, 1, 2])
    labels_b = torch.tensor([1, 1, 0, 1])
    a, b = net(x)
    ce = nn.CrossEntropyLoss()
    loss = ce(a, labels_a) + 0.3 * ce(b, labels_b)
    loss.backward()
    params = dict(net.named_parameters())
    return dict(
        model="two_outputs",
        x=flat(x),
        outputs=flat(torch.cat([a, b], dim=1)),
        targets=[int(v) for pair in zip(labels_a, labels_b) for v in pair],
        weight_b=0.3,
        loss=float(loss.detach()),
        grads={k: flat(p.grad) for k, p in params.items()},
        grad_x=flat(x.grad),
    )


cases = [two_inputs(), two_outputs()]
(FIXTURES / "torch_multi_io.json").write_text(json.dumps(
    {"generator": "scripts/reference/torch_multi_io.py", "torch": torch.__version__, "cases": cases},
    indent=1) + "\n")
print("wrote", FIXTURES / "torch_multi_io.json")
