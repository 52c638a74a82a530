"""The benchmark workloads in the Python frameworks, each written the way that
framework is fastest: PyTorch eager, JAX with the whole step under `jax.jit`, and
TensorFlow with the whole step under `tf.function`. f32, synthetic data, 2 threads.

    python scripts/bench/peers.py FRAMEWORK WORKLOAD

FRAMEWORK is pytorch, jax or tensorflow; WORKLOAD one of WORKLOADS below. Prints one
JSON object: the median over repeated timed runs ("value": samples/s for training and
batch-1024 inference, µs for batch-1 latency), the framework's version and the
process's peak resident memory, or "missing" with the reason when the framework is not
installed. One workload a process, so that each has its own peak memory.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WORKLOADS = ["mlp_small", "mlp_wide", "cnn", "lstm", "infer_1_us", "infer_1024"]
BATCH = {"mlp_small": 128, "mlp_wide": 128, "cnn": 64, "lstm": 32, "infer_1_us": 1, "infer_1024": 1024}
MLP_SIZES = {"mlp_small": [784, 128, 10], "mlp_wide": [784, 1024, 1024, 10]}


def median_seconds(fn, warmup=5, repeats=30, min_time=0.2, min_warmup_time=0.5):
    # At least `warmup` calls and half a second, so thread pools, JIT caches and the
    # processor's caches are in their steady state before timing starts.
    start = time.perf_counter()
    n = 0
    while n < warmup or time.perf_counter() - start < min_warmup_time:
        fn()
        n += 1
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


def report(workload, seconds):
    return seconds * 1e6 if workload == "infer_1_us" else BATCH[workload] / seconds


def torch_run(workload):
    import torch
    import torch.nn as nn

    torch.set_num_threads(2)
    torch.manual_seed(0)

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i + 2 < len(sizes):
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class LstmClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(64, 128, batch_first=True)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.fc(h[:, -1])

    if workload.startswith("infer"):
        model = mlp(MLP_SIZES["mlp_small"])
        x = torch.rand(BATCH[workload], 784)
        with torch.inference_mode():
            return report(workload, median_seconds(lambda: model(x))), torch.__version__
    batch = BATCH[workload]
    if workload in MLP_SIZES:
        model, x = mlp(MLP_SIZES[workload]), torch.rand(batch, 784)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
    elif workload == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.rand(batch, 1, 28, 28)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
    else:
        model, x = LstmClassifier(), torch.rand(batch, 32, 64)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return report(workload, median_seconds(step)), torch.__version__


def jax_run(workload):
    import jax
    import jax.numpy as jnp
    import optax

    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    batch = BATCH[workload]

    def dense_init(key, n_in, n_out):
        bound = 1 / n_in**0.5
        k1, k2 = jax.random.split(key)
        return {"w": jax.random.uniform(k1, (n_in, n_out), minval=-bound, maxval=bound),
                "b": jax.random.uniform(k2, (n_out,), minval=-bound, maxval=bound)}

    def mlp_init(sizes):
        return [dense_init(k, a, b) for k, a, b in zip(jax.random.split(keys[2], len(sizes)), sizes, sizes[1:])]

    def mlp_apply(params, x):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def cnn_apply(p, x):
        h = pool(jax.nn.relu(conv(x, p["c1"]) + p["b1"][None, :, None, None]))
        h = pool(jax.nn.relu(conv(h, p["c2"]) + p["b2"][None, :, None, None]))
        return mlp_apply(p["fc"], h.reshape(h.shape[0], -1))

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

    if workload.startswith("infer"):
        params, infer = mlp_init(MLP_SIZES["mlp_small"]), jax.jit(mlp_apply)
        x = jax.random.uniform(keys[0], (batch, 784))
        return report(workload, median_seconds(lambda: jax.block_until_ready(infer(params, x)))), jax.__version__
    if workload in MLP_SIZES:
        params, apply, opt = mlp_init(MLP_SIZES[workload]), mlp_apply, optax.sgd(0.05)
        x = jax.random.uniform(keys[0], (batch, 784))
    elif workload == "cnn":
        ck = jax.random.split(keys[7], 4)
        params = {"c1": jax.random.uniform(ck[0], (32, 1, 3, 3), minval=-1 / 3, maxval=1 / 3), "b1": jnp.zeros(32),
                  "c2": jax.random.uniform(ck[1], (64, 32, 3, 3), minval=-0.06, maxval=0.06), "b2": jnp.zeros(64),
                  "fc": [dense_init(ck[2], 1600, 128), dense_init(ck[3], 128, 10)]}
        apply, opt = cnn_apply, optax.adam(1e-3)
        x = jax.random.uniform(keys[0], (batch, 1, 28, 28))
    else:
        lk = jax.random.split(keys[6], 3)
        params = {"wi": jax.random.uniform(lk[0], (64, 512), minval=-0.088, maxval=0.088),
                  "wh": jax.random.uniform(lk[1], (128, 512), minval=-0.088, maxval=0.088), "b": jnp.zeros(512),
                  "fc": dense_init(lk[2], 128, 10)}
        apply, opt = lstm_apply, optax.adam(1e-3)
        x = jax.random.uniform(keys[0], (batch, 32, 64))
    y = jax.random.randint(keys[1], (batch,), 0, 10)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    carry = [params, opt.init(params)]

    def run():
        carry[0], carry[1] = step(carry[0], carry[1])
        jax.block_until_ready(carry[0])

    return report(workload, median_seconds(run)), jax.__version__


def tensorflow_run(workload):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.random.set_seed(0)
    keras = tf.keras
    batch = BATCH[workload]

    def mlp(sizes):
        hidden = [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        return keras.Sequential([keras.Input((sizes[0],))] + hidden + [keras.layers.Dense(sizes[-1])])

    if workload.startswith("infer"):
        model = mlp(MLP_SIZES["mlp_small"])
        x = tf.random.uniform((batch, 784))
        infer = tf.function(lambda x: model(x, training=False))
        return report(workload, median_seconds(lambda: infer(x).numpy())), tf.__version__
    if workload in MLP_SIZES:
        model, x = mlp(MLP_SIZES[workload]), tf.random.uniform((batch, 784))
        opt = keras.optimizers.SGD(0.05)
    elif workload == "cnn":
        # Keras' CPU convolutions want channels last; the input is the same 28x28x1 image.
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
        x, opt = tf.random.uniform((batch, 28, 28, 1)), keras.optimizers.Adam(1e-3)
    else:
        model = keras.Sequential([keras.Input((32, 64)), keras.layers.LSTM(128), keras.layers.Dense(10)])
        x, opt = tf.random.uniform((batch, 32, 64)), keras.optimizers.Adam(1e-3)
    y = tf.random.uniform((batch,), 0, 10, dtype=tf.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return report(workload, median_seconds(lambda: step().numpy())), tf.__version__


FRAMEWORKS = {"pytorch": (torch_run, "torch"), "jax": (jax_run, "jax"), "tensorflow": (tensorflow_run, "tensorflow")}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in FRAMEWORKS or sys.argv[2] not in WORKLOADS:
        sys.exit(f"usage: peers.py {{{','.join(FRAMEWORKS)}}} {{{','.join(WORKLOADS)}}}")
    run, module = FRAMEWORKS[sys.argv[1]]
    try:
        __import__(module)
    except ImportError:
        print(json.dumps({"missing": f"not installed ({module})"}))
        return
    value, version = run(sys.argv[2])
    print(json.dumps({"value": value, "version": version, "peak_rss_kib": peak_rss_kib()}))


def peak_rss_kib():
    """This process's own peak resident set (VmHWM), or None off Linux. The parent's
    wait4 would report at least the parent's own resident set at fork time."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
