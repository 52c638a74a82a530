"""Reference values for kiln's attention, layer norm and embedding from PyTorch's own
nn.MultiheadAttention (batch_first, self-attention, with and without a causal mask),
nn.LayerNorm and nn.Embedding, in float64: outputs and the gradients of every parameter and of the input.
Run from the repository root:

    python scripts/reference/torch_attention.py

Writes tests/fixtures/torch_attention.json.
"""

import json
import pathlib

import torch

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
torch.manual_seed(11)


def flat(t):
    return t.detach().reshape(-1).tolist()


cases = []
for causal in (False, True):
    batch, steps, dim, heads = 2, 5, 8, 2
    mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True).double()
    with torch.no_grad():  # non-zero biases, so their gradients are exercised
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    x = (torch.rand(batch, steps, dim, dtype=torch.float64) * 2 - 1).requires_grad_()
    upstream = torch.rand(batch, steps, dim, dtype=torch.float64) * 2 - 1
    mask = torch.triu(torch.ones(steps, steps, dtype=torch.bool), 1) if causal else None
    y, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    (y * upstream).sum().backward()
    names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    params = dict(mha.named_parameters())
    cases.append({
        "kind": "attention", "causal": causal, "batch": batch, "steps": steps, "dim": dim, "heads": heads,
        "x": flat(x), "params": [v for n in names for v in flat(params[n])], "upstream": flat(upstream),
        "y": flat(y), "grad_x": x.grad.reshape(-1).tolist(),
        "grads": [v for n in names for v in params[n].grad.reshape(-1).tolist()],
    })

rows, width = 6, 7
ln = torch.nn.LayerNorm(width).double()
with torch.no_grad():
    ln.weight.uniform_(0.5, 1.5)
    ln.bias.uniform_(-0.5, 0.5)
x = (torch.rand(rows, width, dtype=torch.float64) * 4 - 2).requires_grad_()
upstream = torch.rand(rows, width, dtype=torch.float64) * 2 - 1
y = ln(x)
(y * upstream).sum().backward()
cases.append({
    "kind": "layer_norm", "width": width, "x": flat(x), "params": flat(ln.weight) + flat(ln.bias),
    "upstream": flat(upstream), "y": flat(y), "grad_x": x.grad.reshape(-1).tolist(),
    "grads": ln.weight.grad.reshape(-1).tolist() + ln.bias.grad.reshape(-1).tolist(),
})

vocab, dim = 9, 4
emb = torch.nn.Embedding(vocab, dim).double()
ids = torch.tensor([[3, 0, 8, 3], [5, 5, 1, 2]])
upstream = torch.rand(2, 4, dim, dtype=torch.float64) * 2 - 1
y = emb(ids)
(y * upstream).sum().backward()
cases.append({
    "kind": "embedding", "vocab": vocab, "dim": dim, "ids": ids.reshape(-1).tolist(), "params": flat(emb.weight),
    "upstream": flat(upstream), "y": flat(y), "grads": emb.weight.grad.reshape(-1).tolist(),
})

(FIXTURES / "torch_attention.json").write_text(
    json.dumps({"generator": "scripts/reference/torch_attention.py", "torch": torch.__version__, "cases": cases})
    + "\n"
)
print("wrote", FIXTURES / "torch_attention.json")
