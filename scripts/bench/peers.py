"""The benchmark workloads in other frameworks, each written the way that framework is
fastest: PyTorch eager and JAX with the whole step under `jax.jit` (TensorFlow with
`tf.function` if it is installed). f32, synthetic data, 2 threads.

    python scripts/bench/peers.py > peers.json

Prints one JSON object: for each framework and workload, the median over repeated
timed runs (samples/s for training and batch-1024 inference, µs for batch-1 latency),
or "missing" with the reason when the framework is not installed.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2")


def median_seconds(fn, warmup=5, repeats=30, min_time=0.2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = 0
        while True:
            fn()
            n += 1
            if time.perf_counter() - start >= min_time / repeats * 10 or n >= 50:
                break
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def torch_results():
    import torch
    import torch.nn as nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    out = {}

    def train(name, model, x, y, opt):
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

        out[name] = x.shape[0] / median_seconds(step)

    mlp = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    x = torch.rand(128, 784)
    y = torch.randint(0, 10, (128,))
    train("mlp_small", mlp, x, y, torch.optim.SGD(mlp.parameters(), lr=0.05))
    wide = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    train("mlp_wide", wide, x, y, torch.optim.SGD(wide.parameters(), lr=0.05))
    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    train("cnn", cnn, torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)), torch.optim.Adam(cnn.parameters(), 1e-3))

    class LstmClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(64, 128, batch_first=True)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.fc(h[:, -1])

    lstm = LstmClassifier()
    train("lstm", lstm, torch.rand(32, 32, 64), torch.randint(0, 10, (32,)), torch.optim.Adam(lstm.parameters(), 1e-3))
    with torch.inference_mode():
        one = torch.rand(1, 784)
        out["infer_1_us"] = median_seconds(lambda: mlp(one)) * 1e6
        many = torch.rand(1024, 784)
        out["infer_1024"] = 1024 / median_seconds(lambda: mlp(many))
    out["version"] = torch.__version__
    return out


def jax_results():
    import jax
    import jax.numpy as jnp
    import optax

    out = {}
    key = jax.random.PRNGKey(0)

    def dense_init(key, n_in, n_out):
        bound = 1 / n_in**0.5
        k1, k2 = jax.random.split(key)
        return {"w": jax.random.uniform(k1, (n_in, n_out), minval=-bound, maxval=bound),
                "b": jax.random.uniform(k2, (n_out,), minval=-bound, maxval=bound)}

    def mlp_apply(params, x):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def train(name, params, apply, x, y, opt):
        state = opt.init(params)

        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

        @jax.jit
        def step(p, s):
            g = jax.grad(loss)(p)
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s

        carry = [params, state]

        def run():
            carry[0], carry[1] = step(carry[0], carry[1])
            jax.block_until_ready(carry[0])

        out[name] = x.shape[0] / median_seconds(run)

    keys = jax.random.split(key, 8)
    x = jax.random.uniform(keys[0], (128, 784))
    y = jax.random.randint(keys[1], (128,), 0, 10)
    small = [dense_init(keys[2], 784, 128), dense_init(keys[3], 128, 10)]
    train("mlp_small", small, mlp_apply, x, y, optax.sgd(0.05))
    wide = [dense_init(keys[4], 784, 1024), dense_init(keys[5], 1024, 1024), dense_init(keys[6], 1024, 10)]
    train("mlp_wide", wide, mlp_apply, x, y, optax.sgd(0.05))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def cnn_apply(p, x):
        h = pool(jax.nn.relu(conv(x, p["c1"]) + p["b1"][None, :, None, None]))
        h = pool(jax.nn.relu(conv(h, p["c2"]) + p["b2"][None, :, None, None]))
        h = h.reshape(h.shape[0], -1)
        return mlp_apply(p["fc"], h)

    ck = jax.random.split(keys[7], 6)
    cnn = {"c1": jax.random.uniform(ck[0], (32, 1, 3, 3), minval=-1 / 3, maxval=1 / 3), "b1": jnp.zeros(32),
           "c2": jax.random.uniform(ck[1], (64, 32, 3, 3), minval=-0.06, maxval=0.06), "b2": jnp.zeros(64),
           "fc": [dense_init(ck[2], 1600, 128), dense_init(ck[3], 128, 10)]}
    train("cnn", cnn, cnn_apply, jax.random.uniform(ck[4], (64, 1, 28, 28)), y[:64], optax.adam(1e-3))

    def lstm_apply(p, x):
        def cell(carry, xt):
            h, c = carry
            g = xt @ p["wi"] + h @ p["wh"] + p["b"]
            i, f, gg, o = jnp.split(g, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[0], 128))
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return h @ p["fc"]["w"] + p["fc"]["b"]

    lk = jax.random.split(ck[5], 4)
    lstm = {"wi": jax.random.uniform(lk[0], (64, 512), minval=-0.088, maxval=0.088),
            "wh": jax.random.uniform(lk[1], (128, 512), minval=-0.088, maxval=0.088), "b": jnp.zeros(512),
            "fc": dense_init(lk[2], 128, 10)}
    train("lstm", lstm, lstm_apply, jax.random.uniform(lk[3], (32, 32, 64)), y[:32], optax.adam(1e-3))

    infer = jax.jit(mlp_apply)
    one = jax.random.uniform(keys[0], (1, 784))
    many = jax.random.uniform(keys[1], (1024, 784))
    out["infer_1_us"] = median_seconds(lambda: jax.block_until_ready(infer(small, one))) * 1e6
    out["infer_1024"] = 1024 / median_seconds(lambda: jax.block_until_ready(infer(small, many)))
    out["version"] = jax.__version__
    return out


def main():
    results = {}
    for name, run in [("pytorch", torch_results), ("jax", jax_results)]:
        try:
            results[name] = run()
        except ImportError as e:
            results[name] = {"missing": f"not installed ({e.name})"}
        print(f"{name}: done", file=sys.stderr)
    try:
        import tensorflow  # noqa: F401

        results["tensorflow"] = {"missing": "installed, but its workloads are not written yet"}
    except ImportError:
        results["tensorflow"] = {"missing": "not installed"}
    results["candle"] = {"missing": "not written yet"}
    results["burn"] = {"missing": "not written yet"}
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
