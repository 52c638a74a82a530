"""The benchmark workloads in the Python frameworks, each written the way that
framework is fastest: PyTorch eager, JAX with the whole step under `jax.jit`, and
TensorFlow with the whole step under `tf.function`. f32, synthetic data, 2 threads.

    python scripts/bench/peers.py FRAMEWORK WORKLOAD

FRAMEWORK is pytorch, pytorch-compile (the same modules under `torch.compile`), jax or
tensorflow; WORKLOAD one of WORKLOADS below. Prints one
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

WORKLOADS = ["mlp_small", "mlp_wide", "cnn", "lstm", "infer_1_us", "infer_1024", "transformer", "resnet20"]
BATCH = {"mlp_small": 128, "mlp_wide": 128, "cnn": 64, "lstm": 32, "infer_1_us": 1, "infer_1024": 1024,
         "transformer": 32, "resnet20": 64}
# T6: a causal language model, two pre-norm blocks (GPT-2's layout, exact GELU, no dropout).
LM = {"vocab": 96, "steps": 64, "dim": 128, "heads": 4, "ff": 512, "blocks": 2}
# T7: ResNet-20 (He et al., 2016) on [3, 32, 32]: 3 stages of 3 basic blocks, 16/32/64
# channels, projection shortcuts (1x1 convolution and batch norm) where the shape changes.
RESNET_STAGES = [16, 32, 64]
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


def torch_run(workload, compiled=False):
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

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = LM["dim"]
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, LM["heads"], batch_first=True)
            self.ff = nn.Sequential(nn.Linear(d, LM["ff"]), nn.GELU(), nn.Linear(LM["ff"], d))

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
            return x + self.ff(self.ln2(x))

    class TransformerLm(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(LM["vocab"], LM["dim"])
            self.pos = nn.Parameter(torch.randn(LM["steps"], LM["dim"]) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(LM["blocks"]))
            self.ln_f, self.head = nn.LayerNorm(LM["dim"]), nn.Linear(LM["dim"], LM["vocab"])
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(LM["steps"]))

        def forward(self, idx):
            x = self.tok(idx) + self.pos
            for block in self.blocks:
                x = block(x, self.mask)
            return self.head(self.ln_f(x)).reshape(-1, LM["vocab"])

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    def resnet20():
        layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
        for i, cout in enumerate(RESNET_STAGES):
            for j in range(3):
                layers.append(Basic(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    wrap = torch.compile if compiled else (lambda m: m)
    if workload.startswith("infer"):
        model = wrap(mlp(MLP_SIZES["mlp_small"]))
        x = torch.rand(BATCH[workload], 784)
        with torch.inference_mode():
            return report(workload, median_seconds(lambda: model(x))), torch.__version__
    batch = BATCH[workload]
    y = torch.randint(0, 10, (batch,))
    if workload in MLP_SIZES:
        model, x = mlp(MLP_SIZES[workload]), torch.rand(batch, 784)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
    elif workload == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.rand(batch, 1, 28, 28)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
    elif workload == "lstm":
        model, x = LstmClassifier(), torch.rand(batch, 32, 64)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
    elif workload == "transformer":
        model = TransformerLm()
        tokens = torch.randint(0, LM["vocab"], (batch, LM["steps"] + 1))
        x, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
        opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    else:
        model, x = resnet20(), torch.rand(batch, 3, 32, 32)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    forward = wrap(model)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(forward(x), y).backward()
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

    def layer_norm(p, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]

    def lm_apply(p, idx):
        d, heads, t = LM["dim"], LM["heads"], LM["steps"]
        x = p["tok"][idx] + p["pos"]
        causal = jnp.tril(jnp.ones((t, t), bool))
        for blk in p["blocks"]:
            h = layer_norm(blk["ln1"], x)
            q, k, v = jnp.split(h @ blk["qkv"]["w"] + blk["qkv"]["b"], 3, axis=-1)
            q, k, v = (a.reshape(a.shape[0], t, heads, d // heads) for a in (q, k, v))
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / (d // heads) ** 0.5
            att = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(x.shape)
            x = x + out @ blk["proj"]["w"] + blk["proj"]["b"]
            h = jax.nn.gelu(layer_norm(blk["ln2"], x) @ blk["ff1"]["w"] + blk["ff1"]["b"], approximate=False)
            x = x + h @ blk["ff2"]["w"] + blk["ff2"]["b"]
        logits = layer_norm(p["ln_f"], x) @ p["head"]["w"] + p["head"]["b"]
        return logits.reshape(-1, LM["vocab"])

    def lm_init():
        d, ks = LM["dim"], jax.random.split(keys[5], 4 + 4 * LM["blocks"])
        ln = lambda: {"g": jnp.ones(d), "b": jnp.zeros(d)}
        blocks = [{"ln1": ln(), "ln2": ln(), "qkv": dense_init(ks[4 * i], d, 3 * d),
                   "proj": dense_init(ks[4 * i + 1], d, d), "ff1": dense_init(ks[4 * i + 2], d, LM["ff"]),
                   "ff2": dense_init(ks[4 * i + 3], LM["ff"], d)} for i in range(LM["blocks"])]
        return {"tok": jax.random.normal(ks[-1], (LM["vocab"], d)),
                "pos": 0.02 * jax.random.normal(ks[-2], (LM["steps"], d)),
                "blocks": blocks, "ln_f": ln(), "head": dense_init(ks[-3], d, LM["vocab"])}

    # ResNet-20 channels last (NHWC), XLA's fastest layout on CPU. Batch norm normalises by
    # the batch's statistics, as in training; the running averages are not kept, which
    # saves JAX a little work the other frameworks do.
    def conv_nhwc(x, w, stride):
        pad = "SAME" if w.shape[0] == 3 else "VALID"
        return jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def batch_norm(p, x):
        mean = x.mean((0, 1, 2))
        var = ((x - mean) ** 2).mean((0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]

    def resnet_apply(p, x):
        x = jax.nn.relu(batch_norm(p["bn1"], conv_nhwc(x, p["conv1"], 1)))
        # The strides are Python integers the step is traced with, not parameters.
        for blk, s in zip(p["blocks"], strides):
            h = jax.nn.relu(batch_norm(blk["bn1"], conv_nhwc(x, blk["conv1"], s)))
            h = batch_norm(blk["bn2"], conv_nhwc(h, blk["conv2"], 1))
            short = batch_norm(blk["bns"], conv_nhwc(x, blk["convs"], s)) if "convs" in blk else x
            x = jax.nn.relu(h + short)
        return dense_apply(p["fc"], x.mean((1, 2)))

    def dense_apply(p, x):
        return x @ p["w"] + p["b"]

    strides = [2 if i > 0 and j == 0 else 1 for i in range(len(RESNET_STAGES)) for j in range(3)]

    def resnet_init():
        ks = iter(jax.random.split(keys[4], 64))

        def conv_w(k, cin, cout):
            std = (2 / (k * k * cout)) ** 0.5
            return std * jax.random.normal(next(ks), (k, k, cin, cout))

        bn = lambda c: {"g": jnp.ones(c), "b": jnp.zeros(c)}
        p, cin, blocks = {"conv1": conv_w(3, 3, 16), "bn1": bn(16)}, 16, []
        for i, cout in enumerate(RESNET_STAGES):
            for j in range(3):
                s = 2 if i > 0 and j == 0 else 1
                blk = {"conv1": conv_w(3, cin, cout), "bn1": bn(cout),
                       "conv2": conv_w(3, cout, cout), "bn2": bn(cout)}
                if s != 1 or cin != cout:
                    blk.update(convs=conv_w(1, cin, cout), bns=bn(cout))
                blocks.append(blk)
                cin = cout
        p["blocks"], p["fc"] = blocks, dense_init(next(ks), 64, 10)
        return p

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
    elif workload == "transformer":
        params, apply, opt = lm_init(), lm_apply, optax.adamw(1e-3, weight_decay=0.01)
        tokens = jax.random.randint(keys[0], (batch, LM["steps"] + 1), 0, LM["vocab"])
        x, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
    elif workload == "resnet20":
        params, apply, opt = resnet_init(), resnet_apply, optax.sgd(0.1, momentum=0.9)
        x = jax.random.uniform(keys[0], (batch, 32, 32, 3))
    else:
        lk = jax.random.split(keys[6], 3)
        params = {"wi": jax.random.uniform(lk[0], (64, 512), minval=-0.088, maxval=0.088),
                  "wh": jax.random.uniform(lk[1], (128, 512), minval=-0.088, maxval=0.088), "b": jnp.zeros(512),
                  "fc": dense_init(lk[2], 128, 10)}
        apply, opt = lstm_apply, optax.adam(1e-3)
        x = jax.random.uniform(keys[0], (batch, 32, 64))
    if workload != "transformer":
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
    elif workload == "lstm":
        model = keras.Sequential([keras.Input((32, 64)), keras.layers.LSTM(128), keras.layers.Dense(10)])
        x, opt = tf.random.uniform((batch, 32, 64)), keras.optimizers.Adam(1e-3)
    elif workload == "transformer":
        model, opt = tf_transformer(keras), keras.optimizers.AdamW(1e-3, weight_decay=0.01)
        tokens = tf.random.uniform((batch, LM["steps"] + 1), 0, LM["vocab"], dtype=tf.int32)
        x, y = tokens[:, :-1], tf.reshape(tokens[:, 1:], [-1])
    else:
        model, opt = tf_resnet20(keras), keras.optimizers.SGD(0.1, momentum=0.9)
        x = tf.random.uniform((batch, 32, 32, 3))
    if workload != "transformer":
        y = tf.random.uniform((batch,), 0, 10, dtype=tf.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return report(workload, median_seconds(lambda: step().numpy())), tf.__version__


def tf_transformer(keras):
    d = LM["dim"]

    class Positions(keras.layers.Layer):
        def build(self, shape):
            self.table = self.add_weight(shape=(LM["steps"], d),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

        def call(self, x):
            return x + self.table

    idx = keras.Input((LM["steps"],), dtype="int32")
    x = Positions()(keras.layers.Embedding(LM["vocab"], d)(idx))
    for _ in range(LM["blocks"]):
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.MultiHeadAttention(LM["heads"], d // LM["heads"])(h, h, use_causal_mask=True)
        x = x + h
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.Dense(LM["ff"], activation=lambda a: keras.activations.gelu(a, approximate=False))(h)
        x = x + keras.layers.Dense(d)(h)
    logits = keras.layers.Dense(LM["vocab"])(keras.layers.LayerNormalization(epsilon=1e-5)(x))
    return keras.Model(idx, keras.ops.reshape(logits, (-1, LM["vocab"])))


def tf_resnet20(keras):
    layers = keras.layers

    def conv_bn(x, c, k, stride):
        x = layers.Conv2D(c, k, stride, padding="same", use_bias=False)(x)
        return layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)

    inputs = keras.Input((32, 32, 3))
    x, cin = layers.ReLU()(conv_bn(inputs, 16, 3, 1)), 16
    for i, c in enumerate(RESNET_STAGES):
        for j in range(3):
            s = 2 if i > 0 and j == 0 else 1
            h = conv_bn(layers.ReLU()(conv_bn(x, c, 3, s)), c, 3, 1)
            short = conv_bn(x, c, 1, s) if s != 1 or cin != c else x
            x, cin = layers.ReLU()(h + short), c
    return keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))


FRAMEWORKS = {"pytorch": (torch_run, "torch"),
              "pytorch-compile": (lambda w: torch_run(w, compiled=True), "torch"), "jax": (jax_run, "jax"), "tensorflow": (tensorflow_run, "tensorflow")}


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
