"""Reference values for kiln's attention, layer norm and embedding from PyTorch's own
nn.MultiheadAttention (batch_first: self-attention with and without a causal mask or a
key padding mask, cross-attention to a memory with and without a key padding mask),
nn.LayerNorm and nn.Embedding, in float64: outputs and the gradients of every
parameter, of the input and of the memory.
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


def attention_case(causal, keys, padded, steps=5):
    """One nn.MultiheadAttention case: `keys` memory steps or None for self-attention."""
    batch, dim, heads = 2, 8, 2
    mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True).double()
    with torch.no_grad():  # non-zero biases, so their gradients are exercised
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    x = (torch.rand(batch, steps, dim, dtype=torch.float64) * 2 - 1).requires_grad_()
    memory = None
    if keys is not None:
        memory = (torch.rand(batch, keys, dim, dtype=torch.float64) * 2 - 1).requires_grad_()
    kv = x if memory is None else memory
    n_keys = kv.shape[1]
    padding = None
    if padded:  # the first sample's last two keys padded, the second's none
        padding = torch.zeros(batch, n_keys, dtype=torch.bool)
        padding[0, -2:] = True
    upstream = torch.rand(batch, steps, dim, dtype=torch.float64) * 2 - 1
    mask = torch.triu(torch.ones(steps, steps, dtype=torch.bool), 1) if causal else None
    y, _ = mha(x, kv, kv, attn_mask=mask, key_padding_mask=padding, need_weights=False)
    (y * upstream).sum().backward()
    names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    params = dict(mha.named_parameters())
    case = {
        "kind": "attention", "causal": causal, "batch": batch, "steps": steps, "keys": n_keys,
        "dim": dim, "heads": heads,
        "x": flat(x), "params": [v for n in names for v in flat(params[n])], "upstream": flat(upstream),
        "y": flat(y), "grad_x": x.grad.reshape(-1).tolist(),
        "grads": [v for n in names for v in params[n].grad.reshape(-1).tolist()],
    }
    if memory is not None:
        case["memory"] = flat(memory)
        case["grad_memory"] = memory.grad.reshape(-1).tolist()
    if padding is not None:
        case["padding"] = padding.double().reshape(-1).tolist()
    cases.append(case)


# (causal, memory steps or None for self-attention, padded)
for causal, keys, padded in [(False, None, False), (True, None, False), (False, None, True),
                             (False, 7, False), (False, 7, True)]:
    attention_case(causal, keys, padded)

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

# Causal self-attention over more steps than kiln's blocks of 16 queries (16, 16, 5):
# drawn after every case above, whose values stay as they were.
attention_case(True, None, False, steps=37)
attention_case(True, None, True, steps=37)

(FIXTURES / "torch_attention.json").write_text(
    json.dumps({"generator": "scripts/reference/torch_attention.py", "torch": torch.__version__, "cases": cases})
    + "\n"
)
print("wrote", FIXTURES / "torch_attention.json")
