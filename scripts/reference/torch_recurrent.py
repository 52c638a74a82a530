"""Reference values for kiln's recurrent layers from PyTorch's own nn.RNN, nn.LSTM and
nn.GRU (float64): outputs for every step and the gradients of every parameter and of
the input, for an upstream gradient on the whole output sequence. Includes a 64-step
LSTM. Run from the repository root:

    python scripts/reference/torch_recurrent.py

Writes tests/fixtures/torch_recurrent.json.
"""

import json
import pathlib

import torch

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.manual_seed(7)

cases = []
for cell, module in [("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)]:
    for steps in (1, 6, 64):
        if steps == 64 and cell != "lstm":
            continue
        batch, features, hidden = 3, 5, 4
        layer = module(features, hidden, batch_first=True).double()
        x = (torch.rand(batch, steps, features, dtype=torch.float64) * 2 - 1).requires_grad_()
        upstream = torch.rand(batch, steps, hidden, dtype=torch.float64) * 2 - 1
        y, _ = layer(x)
        (y * upstream).sum().backward()
        names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        params = dict(layer.named_parameters())
        cases.append(
            {
                "cell": cell,
                "batch": batch,
                "steps": steps,
                "features": features,
                "hidden": hidden,
                "x": x.detach().reshape(-1).tolist(),
                "params": [v for n in names for v in params[n].detach().reshape(-1).tolist()],
                "upstream": upstream.reshape(-1).tolist(),
                "y": y.detach().reshape(-1).tolist(),
                "grad_x": x.grad.reshape(-1).tolist(),
                "grads": [v for n in names for v in params[n].grad.reshape(-1).tolist()],
            }
        )

(FIXTURES / "torch_recurrent.json").write_text(
    json.dumps({"generator": "scripts/reference/torch_recurrent.py", "torch": torch.__version__, "cases": cases})
    + "\n"
)
print("wrote", FIXTURES / "torch_recurrent.json")
