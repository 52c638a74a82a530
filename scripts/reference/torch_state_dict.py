"""A PyTorch state dict for kiln's interoperability test.

Builds the PyTorch twin of

    kiln::model! { struct TorchMlp { input: [20], fc1: Dense(16), Relu, fc2: Dense(5) } }

with PyTorch's own initialisation, saves its state dict with safetensors, and records
an input batch with the logits PyTorch computes for it. Run from the repository root:

    python scripts/reference/torch_state_dict.py

Writes tests/fixtures/torch_mlp.safetensors and tests/fixtures/torch_mlp.json.
"""

import json
import pathlib

import torch
from safetensors.torch import save_file

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"


class TorchMlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 16)
        self.fc2 = torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


torch.manual_seed(2026)
net = TorchMlp().eval()
save_file(net.state_dict(), str(FIXTURES / "torch_mlp.safetensors"))
x = torch.rand(4, 20) * 2 - 1
with torch.no_grad():
    logits = net(x)
(FIXTURES / "torch_mlp.json").write_text(
    json.dumps(
        {
            "generator": "scripts/reference/torch_state_dict.py",
            "torch": torch.__version__,
            "x": x.reshape(-1).tolist(),
            "logits": logits.reshape(-1).tolist(),
        },
        indent=1,
    )
    + "\n"
)
print("wrote", FIXTURES / "torch_mlp.safetensors")
