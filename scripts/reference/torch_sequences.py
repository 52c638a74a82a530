"""PyTorch references for kiln's sequence layers: bidirectional nn.LSTM, nn.GRU and
nn.RNN, nn.Conv1d (stride, padding, dilation, with and without bias), and the
`x.transpose(1, 2)` between a sequence and a 1-d convolution.

Each model below is the PyTorch twin of a `kiln::model!` in tests/reference.rs, built
from PyTorch's own modules so that its state dict has exactly the names kiln gives its
parameters (`lstm.weight_ih_l0_reverse`, `conv1.weight` of shape `[out, in, k]`). For
each, in float64: the state dict, saved with safetensors
(`tests/fixtures/torch_<model>.safetensors`); an input batch, the output, and dL/d(parameter)
and dL/d(input) for L = sum(upstream * output) with a random `upstream`.

Run from the repository root, in an environment with torch and safetensors (see
docs/testing.md):

    python scripts/reference/torch_sequences.py

Writes tests/fixtures/torch_sequences.json and one safetensors file per model.
"""

import json
import pathlib
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from torch import nn

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.set_default_dtype(torch.float64)
torch.manual_seed(20261205)


class BiLstm(nn.Module):
    """`lstm: Lstm(4, bidirectional = true), head: Dense(2)` over [6, 3]."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


class BiGruRnn(nn.Module):
    """`gru: Gru(3, bidirectional = true), rnn: Rnn(2, bidirectional = true)` over [5, 4]."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 3, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(6, 2, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.rnn(self.gru(x)[0])[0]


class Conv1dNet(nn.Module):
    """Two 1-d convolutions over [4, 10], then a dense layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 5, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(5, 3, kernel_size=3, padding=2, dilation=2, bias=False)
        self.fc = nn.Linear(15, 2)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.fc(x.flatten(1))


class SequenceConv(nn.Module):
    """A sequence [8, 3] through a 1-d convolution over its steps and a bidirectional
    LSTM, classified from the last step."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.fc(self.lstm(x)[0][:, -1])


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def case(name, net, x_shape):
    state = OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    save_file(state, str(FIXTURES / f"torch_{name}.safetensors"))
    x = (torch.rand(*x_shape) * 2 - 1).requires_grad_(True)
    y = net(x)
    upstream = torch.rand(*y.shape) * 2 - 1
    (y * upstream).sum().backward()
    params = dict(net.named_parameters())
    return dict(
        model=name,
        state_dict=list(state),
        x=flat(x),
        y_eval=flat(y),
        y=flat(y),
        upstream=flat(upstream),
        grads={k: flat(p.grad) for k, p in params.items()},
        grad_x=flat(x.grad),
        buffers_after={},
    )


cases = [
    case("bilstm", BiLstm(), (3, 6, 3)),
    case("bigru_rnn", BiGruRnn(), (2, 5, 4)),
    case("conv1d", Conv1dNet(), (3, 4, 10)),
    case("sequence_conv", SequenceConv(), (2, 8, 3)),
]
(FIXTURES / "torch_sequences.json").write_text(json.dumps(
    {"generator": "scripts/reference/torch_sequences.py", "torch": torch.__version__, "cases": cases},
    indent=1) + "\n")
print("wrote", FIXTURES / "torch_sequences.json")
