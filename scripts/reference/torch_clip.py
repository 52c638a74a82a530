"""PyTorch's gradient clipping, for kiln's clipping tests.

The PyTorch twin of

    kiln::model! { struct Clipped { input: [4], fc1: Dense(5), Tanh, fc2: Dense(3) } }

in float64, with parameters and a batch given by formulas the Rust test repeats. It
records the gradients of one cross-entropy pass clipped by `clip_grad_norm_` and by
`clip_grad_value_` with the norm each returned, and the parameters after five
training steps with clipping before every `optimizer.step()`: SGD with a norm bound
and Adam with a value bound. Run from the repository root:

    python scripts/reference/torch_clip.py

Writes tests/fixtures/torch_clip.json.
"""

import json
import pathlib

import torch

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.set_default_dtype(torch.float64)


def values(n, seed):
    """`((i * 7 + seed) % 13 - 6) / 5` for i in 0..n, as the Rust test computes."""
    return torch.tensor([((i * 7 + seed) % 13 - 6) / 5.0 for i in range(n)])


class Clipped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 5)
        self.fc2 = torch.nn.Linear(5, 3)
        with torch.no_grad():
            # kiln's parameter order: fc1.weight, fc1.bias, fc2.weight, fc2.bias.
            flat = values(4 * 5 + 5 + 5 * 3 + 3, 1)
            at = 0
            for p in self.parameters():
                p.copy_(flat[at : at + p.numel()].reshape(p.shape))
                at += p.numel()

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


x = values(6 * 4, 3).reshape(6, 4) * 2
labels = torch.tensor([0, 2, 1, 1, 0, 2])
loss_fn = torch.nn.CrossEntropyLoss()


def grads_after(clip):
    net = Clipped()
    loss_fn(net(x), labels).backward()
    norm = clip(net.parameters())
    flat = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    return float(norm) if norm is not None else None, flat.tolist()


def trained(make_optimizer, clip):
    net = Clipped()
    opt = make_optimizer(net.parameters())
    norms = []
    for _ in range(5):
        opt.zero_grad()
        loss_fn(net(x), labels).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))))
        clip(net.parameters())
        opt.step()
    return norms, torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist()


norm, by_norm = grads_after(lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.3))
_, by_value = grads_after(lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.05))
_, unclipped = grads_after(lambda ps: None)
sgd_norms, sgd = trained(
    lambda ps: torch.optim.SGD(ps, lr=0.5),
    lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.3),
)
adam_norms, adam = trained(
    lambda ps: torch.optim.Adam(ps, lr=0.01),
    lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.05),
)
(FIXTURES / "torch_clip.json").write_text(
    json.dumps(
        {
            "torch": torch.__version__,
            "max_norm": 0.3,
            "clip_value": 0.05,
            "norm": norm,
            "unclipped": unclipped,
            "clipped_by_norm": by_norm,
            "clipped_by_value": by_value,
            "sgd_norms": sgd_norms,
            "sgd_params": sgd,
            "adam_norms": adam_norms,
            "adam_params": adam,
        },
        indent=1,
    )
    + "\n"
)
