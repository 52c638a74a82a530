"""PyTorch references for kiln's models with several inputs and outputs.

- `two_inputs`: an image and a feature vector, a convolutional trunk on the image
  concatenated with the features, one head. kiln takes both inputs packed into one
  vector per sample (the image's 72 values, then the 3 features); the fixture's `x` and
  `grad_x` are packed that way.
- `two_outputs`: one trunk, two heads, trained on cross-entropy of the first plus 0.3
  times cross-entropy of the second (mean over the batch each, as PyTorch's default).
  The fixture holds the loss, every parameter's gradient and the input's.

- `encoder_decoder`: PyTorch's own `nn.TransformerEncoderLayer` (pre-norm, GELU) over a
  source with a key padding mask, and `nn.TransformerDecoderLayer` (post-norm, ReLU)
  over a target, causal, attending to the encoded source under the same mask; a
  linear head on the flattened result. kiln packs `[source, padding, target]` per
  sample (the padding as 0/1; its gradient is zero).

- `triage`: Keras's functional-API example in small, three inputs and two outputs of
  different kinds: a title and a body of token ids (an embedding and an LSTM or a GRU
  each, the last step kept) and tag features, concatenated; a priority logit trained
  on binary cross-entropy and a department trained on cross-entropy against class
  probabilities (one-hot and soft rows) weighted 0.2. The fixture holds both outputs,
  the loss and every parameter's gradient (token inputs have no input gradient).

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


class EncoderDecoder(nn.Module):
    """`encoded: source >> TransformerEncoderLayer(heads = 2, ff = 16, dropout = 0.0,
    activation = gelu, norm_first = true, key_padding = padding)`, `decoded: target >>
    TransformerDecoderLayer(heads = 2, ff = 16, memory = encoded, dropout = 0.0,
    memory_padding = padding)`, `outputs: { y: decoded >> { Flatten, Dense(3) } }`."""

    def __init__(self):
        super().__init__()
        self.encoded = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu",
                                                  norm_first=True, batch_first=True)
        self.decoded = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.y = nn.Sequential(nn.Flatten(), nn.Linear(32, 3))

    def forward(self, source, padding, target):
        memory = self.encoded(source, src_key_padding_mask=padding)
        causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
        decoded = self.decoded(target, memory, tgt_mask=causal, memory_key_padding_mask=padding)
        return self.y(decoded)


class Triage(nn.Module):
    """`t: title >> { Embedding(20, 4), Lstm(5), LastStep }`, `b: body >> { Embedding(20,
    4), Gru(3), LastStep }`, `joined: Concat(t, b, tags)`, `outputs: { priority: joined >>
    Dense(1), department: joined >> Dense(4) }`."""

    def __init__(self):
        super().__init__()
        self.t = nn.ModuleList([nn.Embedding(20, 4), nn.LSTM(4, 5, batch_first=True)])
        self.b = nn.ModuleList([nn.Embedding(20, 4), nn.GRU(4, 3, batch_first=True)])
        self.priority = nn.Linear(13, 1)
        self.department = nn.Linear(13, 4)

    def forward(self, title, body, tags):
        t = self.t[1](self.t[0](title))[0][:, -1]
        b = self.b[1](self.b[0](body))[0][:, -1]
        joined = torch.cat([t, b, tags], dim=1)
        return self.priority(joined), self.department(joined)


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


def encoder_decoder():
    net = EncoderDecoder()
    with torch.no_grad():  # non-zero biases and norms away from 1 and 0
        for name, p in net.named_parameters():
            if "bias" in name or "norm" in name:
                p.uniform_(0.5, 1.5) if "norm" in name and "weight" in name else p.uniform_(-0.3, 0.3)
    save("encoder_decoder", net)
    batch = 3
    source = (torch.rand(batch, 6, 8) * 2 - 1).requires_grad_(True)
    target = (torch.rand(batch, 4, 8) * 2 - 1).requires_grad_(True)
    # The first sample's last two source steps padded, the second's last one, the third's none.
    padding = torch.zeros(batch, 6, dtype=torch.bool)
    padding[0, 4:] = True
    padding[1, 5:] = True
    y = net(source, padding, target)
    upstream = torch.rand(*y.shape) * 2 - 1
    (y * upstream).sum().backward()
    packed = lambda *parts: torch.cat([p.reshape(batch, -1) for p in parts], dim=1)
    params = dict(net.named_parameters())
    return dict(
        model="encoder_decoder",
        x=flat(packed(source, padding.double(), target)),
        y_eval=flat(y),
        y=flat(y),
        upstream=flat(upstream),
        grads={k: flat(p.grad) for k, p in params.items()},
        grad_x=flat(packed(source.grad, torch.zeros(batch, 6), target.grad)),
        buffers_after={},
    )


def triage():
    net = Triage()
    save("triage", net)
    batch = 4
    title = torch.randint(0, 20, (batch, 6))
    body = torch.randint(0, 20, (batch, 8))
    tags = torch.rand(batch, 5) * 2 - 1
    priority_target = torch.tensor([[1.0], [0.0], [0.7], [1.0]])
    department_target = torch.tensor([
        [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.1, 0.6, 0.2, 0.1], [0.0, 0.5, 0.0, 0.5],
    ])
    priority, department = net(title, body, tags)
    loss = (nn.functional.binary_cross_entropy_with_logits(priority, priority_target)
            + 0.2 * nn.functional.cross_entropy(department, department_target))
    loss.backward()
    params = dict(net.named_parameters())
    packed = torch.cat([title.double(), body.double(), tags], dim=1)
    return dict(
        model="triage",
        x=flat(packed),
        outputs=flat(torch.cat([priority, department], dim=1)),
        targets=flat(torch.cat([priority_target, department_target], dim=1)),
        weight_department=0.2,
        loss=float(loss.detach()),
        grads={k: flat(p.grad) for k, p in params.items()},
    )


cases = [two_inputs(), two_outputs(), encoder_decoder(), triage()]
(FIXTURES / "torch_multi_io.json").write_text(json.dumps(
    {"generator": "scripts/reference/torch_multi_io.py", "torch": torch.__version__, "cases": cases},
    indent=1) + "\n")
print("wrote", FIXTURES / "torch_multi_io.json")
