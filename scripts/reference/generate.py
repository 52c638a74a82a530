"""Reference values for kiln's gradient and optimiser tests, computed with JAX and optax.

Every number kiln's `tests/reference.rs` compares against comes from this file:
layer forwards and backwards (via `jax.vjp`), losses and their gradients
(`jax.value_and_grad`), whole models written here in JAX with kiln's parameter
layout, and optimiser trajectories from optax. Everything is float64.

Run from the repository root (see docs/testing.md for the environment):

    python scripts/reference/generate.py

It writes tests/fixtures/reference.json; commit that file, never the environment.
"""

import json
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "reference.json"
rng = np.random.default_rng(20261124)


def draw(*shape, scale=1.0):
    return rng.uniform(-scale, scale, size=shape)


def flat(a):
    return [float(v) for v in np.asarray(a).reshape(-1)]


ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": jax.nn.relu,
    "leaky_relu_0.1": lambda z: jax.nn.leaky_relu(z, 0.1),
    "leaky_relu_-0.2": lambda z: jax.nn.leaky_relu(z, -0.2),
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
}


def dense_cases():
    cases = []
    rows, n_in, n_out = 3, 5, 4
    for name, act in ACTIVATIONS.items():
        x, w, b = draw(rows, n_in, scale=2.0), draw(n_out, n_in), draw(n_out)
        upstream = draw(rows, n_out)

        def layer(x, w, b):
            return act(x @ w.T + b)

        y, vjp = jax.vjp(layer, x, w, b)
        dx, dw, db = vjp(upstream)
        cases.append(
            dict(activation=name, rows=rows, x=flat(x), weight=flat(w), bias=flat(b),
                 upstream=flat(upstream), y=flat(y), grad_x=flat(dx), grad_weight=flat(dw),
                 grad_bias=flat(db))
        )
    return cases


def softmax_cases():
    cases = []
    x, upstream = draw(3, 5, scale=3.0), draw(3, 5)
    for name, fn in [("softmax", jax.nn.softmax), ("log_softmax", jax.nn.log_softmax)]:
        y, vjp = jax.vjp(lambda x: fn(x, axis=-1), x)
        (dx,) = vjp(upstream)
        cases.append(dict(kind=name, width=5, x=flat(x), upstream=flat(upstream), y=flat(y), grad_x=flat(dx)))
    return cases


def loss_cases():
    rows, width = 3, 4
    logits = draw(rows, width, scale=4.0)
    probs = rng.uniform(0.05, 0.95, size=(rows, width))
    targets = rng.uniform(0.0, 1.0, size=(rows, width))
    labels = np.array([2, 0, 3])
    reductions = {"mean": jnp.mean, "sum": jnp.sum}
    cases = []
    for red_name, red in reductions.items():
        defs = {
            "mse": (logits, lambda y: red((y - targets) ** 2), flat(targets)),
            "bce": (probs, lambda y: red(-(targets * jnp.log(y) + (1 - targets) * jnp.log1p(-y))), flat(targets)),
            "bce_logits": (logits, lambda y: red(optax.sigmoid_binary_cross_entropy(y, targets)), flat(targets)),
            "cross_entropy": (
                logits,
                lambda y: red(optax.softmax_cross_entropy_with_integer_labels(y, labels)),
                [int(v) for v in labels],
            ),
        }
        for name, (output, fn, target) in defs.items():
            value, grad = jax.value_and_grad(fn)(output)
            cases.append(dict(loss=name, reduction=red_name, width=width, output=flat(output),
                              target=target, value=float(value), grad=flat(grad)))
    return cases


def dense(params, prefix, x):
    return x @ params[prefix + ".weight"].T + params[prefix + ".bias"]


def init(shapes):
    """Parameters in kiln's order, with the fan-in bounds PyTorch uses."""
    params = {}
    for name, shape in shapes:
        fan_in = shape[1] if len(shape) == 2 else shapes_fan_in[name]
        params[name] = draw(*shape, scale=1.0 / np.sqrt(fan_in))
    return params


shapes_fan_in = {}


def model_case(name, shapes, fwd, loss, x, target, target_json):
    for pname, shape in shapes:
        if len(shape) == 2:
            shapes_fan_in[pname.replace(".weight", ".bias")] = shape[1]
    params = init(shapes)
    value, (grads, grad_x) = jax.value_and_grad(lambda p, x: loss(fwd(p, x), target), argnums=(0, 1))(params, x)
    return dict(model=name, x=flat(x), target=target_json,
                params=[v for pname, _ in shapes for v in flat(params[pname])],
                value=float(value),
                grads=[v for pname, _ in shapes for v in flat(grads[pname])],
                grad_x=flat(grad_x))


def ce(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def model_cases():
    cases = []
    # kiln: input: [5], fc1: Dense(7), Relu, fc2: Dense(4), Tanh, fc3: Dense(3)
    shapes = [("fc1.weight", (7, 5)), ("fc1.bias", (7,)), ("fc2.weight", (4, 7)), ("fc2.bias", (4,)),
              ("fc3.weight", (3, 4)), ("fc3.bias", (3,))]

    def mlp(p, x):
        h = jax.nn.relu(dense(p, "fc1", x))
        h = jnp.tanh(dense(p, "fc2", h))
        return dense(p, "fc3", h)

    labels = np.array([0, 2, 1, 2])
    cases.append(model_case("mlp", shapes, mlp, ce, draw(4, 5, scale=2.0), labels, [int(v) for v in labels]))

    # kiln: input: [6], fc_in: Dense(6), Gelu, block: Residual { inner: Dense(6), Tanh },
    #       LogSoftmax, out: Dense(3)
    shapes = [("fc_in.weight", (6, 6)), ("fc_in.bias", (6,)), ("inner.weight", (6, 6)), ("inner.bias", (6,)),
              ("out.weight", (3, 6)), ("out.bias", (3,))]

    def residual(p, x):
        h = jax.nn.gelu(dense(p, "fc_in", x), approximate=False)
        h = h + jnp.tanh(dense(p, "inner", h))
        h = jax.nn.log_softmax(h, axis=-1)
        return dense(p, "out", h)

    labels = np.array([1, 0, 2])
    cases.append(model_case("residual", shapes, residual, ce, draw(3, 6), labels, [int(v) for v in labels]))

    # kiln: input: [3, 4], seq: Dense(6), Sigmoid, Flatten, head: Dense(2)
    shapes = [("seq.weight", (6, 4)), ("seq.bias", (6,)), ("head.weight", (2, 18)), ("head.bias", (2,))]

    def sequence(p, x):
        h = jax.nn.sigmoid(dense(p, "seq", x))
        return dense(p, "head", h.reshape(h.shape[0], -1))

    targets = rng.uniform(0, 1, size=(2, 2))
    bce = lambda y, t: jnp.mean(optax.sigmoid_binary_cross_entropy(y, t))  # noqa: E731
    cases.append(model_case("sequence", shapes, sequence, bce, draw(2, 3, 4), targets, flat(targets)))
    return cases


def optimizer_cases():
    p0 = draw(6)
    grads = [draw(6) for _ in range(4)]
    defs = {
        "sgd_momentum_nesterov": optax.sgd(0.1, momentum=0.9, nesterov=True),
        "adam": optax.adam(0.01),
        "adamw": optax.adamw(0.01, weight_decay=0.01),
        "rmsprop_centered_momentum": optax.rmsprop(0.01, decay=0.99, eps=1e-8, eps_in_sqrt=False,
                                                   centered=True, momentum=0.5),
    }
    cases = []
    for name, opt in defs.items():
        p = jnp.asarray(p0)
        state = opt.init(p)
        trajectory = []
        for g in grads:
            updates, state = opt.update(jnp.asarray(g), state, p)
            p = optax.apply_updates(p, updates)
            trajectory.append(flat(p))
        cases.append(dict(optimizer=name, params=flat(p0), grads=[flat(g) for g in grads], trajectory=trajectory))
    return cases


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_cases():
    """Convolutions with stride, padding, dilation and non-square kernels."""
    cases = []
    configs = [
        # (batch, cin, (h, w), cout, kernel, stride, padding, dilation)
        (2, 1, (6, 6), 2, (3, 3), (1, 1), (0, 0), (1, 1)),
        (2, 2, (7, 5), 3, (3, 2), (2, 1), (1, 0), (1, 1)),
        (1, 3, (9, 8), 2, (3, 3), (2, 2), (2, 1), (2, 1)),
        (3, 2, (5, 5), 4, (1, 1), (1, 1), (0, 0), (1, 1)),
    ]
    for batch, cin, (h, w), cout, k, st, pad, dil in configs:
        x, wt, b = draw(batch, cin, h, w), draw(cout, cin, *k), draw(cout)
        oh, ow = out_size(h, k[0], st[0], pad[0], dil[0]), out_size(w, k[1], st[1], pad[1], dil[1])
        upstream = draw(batch, cout, oh, ow)

        def conv(x, wt, b):
            y = jax.lax.conv_general_dilated(
                x, wt, window_strides=st, padding=[(pad[0], pad[0]), (pad[1], pad[1])],
                rhs_dilation=dil, dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + b[None, :, None, None]

        y, vjp = jax.vjp(conv, x, wt, b)
        dx, dw, db = vjp(upstream)
        cases.append(dict(batch=batch, in_channels=cin, in_size=[h, w], out_channels=cout, kernel=list(k),
                          stride=list(st), padding=list(pad), dilation=list(dil), out_size=[oh, ow],
                          x=flat(x), weight=flat(wt), bias=flat(b), upstream=flat(upstream), y=flat(y),
                          grad_x=flat(dx), grad_weight=flat(dw), grad_bias=flat(db)))
    return cases


def pool_cases():
    cases = []
    configs = [
        # (batch, c, (h, w), kernel, stride, padding)
        (2, 2, (6, 6), (2, 2), (2, 2), (0, 0)),
        (1, 3, (7, 6), (3, 2), (2, 1), (1, 1)),
        (2, 1, (5, 5), (3, 3), (1, 1), (1, 1)),
    ]
    for batch, c, (h, w), k, st, pad in configs:
        x = draw(batch, c, h, w)
        oh, ow = out_size(h, k[0], st[0], pad[0], 1), out_size(w, k[1], st[1], pad[1], 1)
        upstream = draw(batch, c, oh, ow)
        window, strides = (1, 1) + k, (1, 1) + st
        padding = [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])]

        def max_pool(x):
            return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding)

        def avg_pool(x):  # PyTorch's count_include_pad=True
            return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding) / (k[0] * k[1])

        for kind, fn in [("max", max_pool), ("avg", avg_pool)]:
            y, vjp = jax.vjp(fn, x)
            (dx,) = vjp(upstream)
            cases.append(dict(kind=kind, batch=batch, channels=c, in_size=[h, w], kernel=list(k), stride=list(st),
                              padding=list(pad), out_size=[oh, ow], x=flat(x), upstream=flat(upstream),
                              y=flat(y), grad_x=flat(dx)))
    return cases


def batch_norm_cases():
    """Training-mode batch norm (biased variance) and PyTorch's running-statistics update."""
    cases = []
    for batch, c, inner in [(4, 3, 1), (2, 2, 6)]:
        x = draw(batch, c, inner, scale=2.0)
        gamma, beta = 1.0 + draw(c, scale=0.5), draw(c)
        upstream = draw(batch, c, inner)
        eps, momentum = 1e-5, 0.1

        def bn(x, gamma, beta):
            mean = x.mean(axis=(0, 2), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(0, 2), keepdims=True)
            return gamma[None, :, None] * (x - mean) / jnp.sqrt(var + eps) + beta[None, :, None]

        y, vjp = jax.vjp(bn, x, gamma, beta)
        dx, dgamma, dbeta = vjp(upstream)
        m = batch * inner
        mean = x.mean(axis=(0, 2))
        var_unbiased = x.var(axis=(0, 2)) * m / (m - 1)
        running_mean = momentum * mean
        running_var = (1 - momentum) * 1.0 + momentum * var_unbiased
        cases.append(dict(batch=batch, channels=c, inner=inner, eps=eps, momentum=momentum, x=flat(x),
                          gamma=flat(gamma), beta=flat(beta), upstream=flat(upstream), y=flat(y),
                          grad_x=flat(dx), grad_gamma=flat(dgamma), grad_beta=flat(dbeta),
                          running_mean=flat(running_mean), running_var=flat(running_var)))
    return cases


def cnn_model_case():
    # kiln: input: [1, 8, 8], conv: Conv2d(3, kernel = 3, padding = 1), Relu, MaxPool2d(2),
    #       bn: BatchNorm2d, Flatten, fc: Dense(4)
    shapes = [("conv.weight", (3, 1, 3, 3)), ("conv.bias", (3,)), ("bn.weight", (3,)), ("bn.bias", (3,)),
              ("fc.weight", (4, 48)), ("fc.bias", (4,))]
    params = {
        "conv.weight": draw(3, 1, 3, 3, scale=1 / 3), "conv.bias": draw(3, scale=1 / 3),
        "bn.weight": 1.0 + draw(3, scale=0.3), "bn.bias": draw(3, scale=0.3),
        "fc.weight": draw(4, 48, scale=1 / np.sqrt(48)), "fc.bias": draw(4, scale=1 / np.sqrt(48)),
    }

    def cnn(p, x):
        h = jax.lax.conv_general_dilated(x, p["conv.weight"], (1, 1), [(1, 1), (1, 1)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + p["conv.bias"][None, :, None, None])
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        mean = h.mean(axis=(0, 2, 3), keepdims=True)
        var = ((h - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        h = (h - mean) / jnp.sqrt(var + 1e-5) * p["bn.weight"][None, :, None, None] + p["bn.bias"][None, :, None, None]
        return dense(p, "fc", h.reshape(h.shape[0], -1))

    x = draw(3, 1, 8, 8)
    labels = np.array([3, 0, 2])
    value, (grads, grad_x) = jax.value_and_grad(lambda p, x: ce(cnn(p, x), labels), argnums=(0, 1))(params, x)
    return dict(model="cnn", x=flat(x), target=[int(v) for v in labels],
                params=[v for n, _ in shapes for v in flat(params[n])], value=float(value),
                grads=[v for n, _ in shapes for v in flat(grads[n])], grad_x=flat(grad_x))


def conv2d(p, name, x, stride=1, pad=0):
    y = jax.lax.conv_general_dilated(x, p[name + ".weight"], (stride, stride), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + p[name + ".bias"][None, :, None, None]


def batch_norm2d(p, name, h):
    mean = h.mean(axis=(0, 2, 3), keepdims=True)
    var = ((h - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return (h - mean) / jnp.sqrt(var + 1e-5) * p[name + ".weight"][None, :, None, None] \
        + p[name + ".bias"][None, :, None, None]


def branch_case(name, shapes, fwd, x, labels):
    """A model with branches: parameters named as PyTorch nests the modules."""
    params = {}
    for pname, shape in shapes:
        if pname.endswith(".weight") and len(shape) == 1:  # batch norm's gamma
            params[pname] = 1.0 + draw(*shape, scale=0.3)
        elif len(shape) == 1:
            params[pname] = draw(*shape, scale=0.3)
        else:
            params[pname] = draw(*shape, scale=1 / np.sqrt(np.prod(shape[1:])))
    value, (grads, grad_x) = jax.value_and_grad(lambda p, x: ce(fwd(p, x), labels), argnums=(0, 1))(params, x)
    return dict(model=name, names=[n for n, _ in shapes], x=flat(x), target=[int(v) for v in labels],
                params=[v for n, _ in shapes for v in flat(params[n])], value=float(value),
                grads=[v for n, _ in shapes for v in flat(grads[n])], grad_x=flat(grad_x))


def branch_model_cases():
    cases = []
    # kiln: input: [2, 5, 5], mixed: Concat { b1: { Conv2d(2, kernel = 1), Relu },
    #   b3: { Conv2d(2, kernel = 1), Relu, Conv2d(3, kernel = 3, padding = 1) },
    #   pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(2, kernel = 1) }, skip: {} },
    #   GlobalAvgPool, out: Dense(3)
    shapes = [("mixed.b1.0.weight", (2, 2, 1, 1)), ("mixed.b1.0.bias", (2,)),
              ("mixed.b3.0.weight", (2, 2, 1, 1)), ("mixed.b3.0.bias", (2,)),
              ("mixed.b3.2.weight", (3, 2, 3, 3)), ("mixed.b3.2.bias", (3,)),
              ("mixed.pool.1.weight", (2, 2, 1, 1)), ("mixed.pool.1.bias", (2,)),
              ("out.weight", (3, 9)), ("out.bias", (3,))]

    def inception(p, x):
        b1 = jax.nn.relu(conv2d(p, "mixed.b1.0", x))
        b3 = conv2d(p, "mixed.b3.2", jax.nn.relu(conv2d(p, "mixed.b3.0", x)), pad=1)
        pooled = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 1, 1),
                                       [(0, 0), (0, 0), (1, 1), (1, 1)])
        pool = conv2d(p, "mixed.pool.1", pooled)
        h = jnp.concatenate([b1, b3, pool, x], axis=1)  # torch.cat(dim=1)
        return dense(p, "out", h.mean(axis=(2, 3)))

    cases.append(branch_case("inception", shapes, inception, draw(2, 2, 5, 5), np.array([2, 0])))

    # kiln: input: [2, 6, 6], down: Add {
    #   main: { Conv2d(4, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
    #           Conv2d(4, kernel = 3, padding = 1), BatchNorm2d },
    #   shortcut: { Conv2d(4, kernel = 1, stride = 2), BatchNorm2d } },
    #   Relu, GlobalAvgPool, fc: Dense(3)
    shapes = [("down.main.0.weight", (4, 2, 3, 3)), ("down.main.0.bias", (4,)),
              ("down.main.1.weight", (4,)), ("down.main.1.bias", (4,)),
              ("down.main.3.weight", (4, 4, 3, 3)), ("down.main.3.bias", (4,)),
              ("down.main.4.weight", (4,)), ("down.main.4.bias", (4,)),
              ("down.shortcut.0.weight", (4, 2, 1, 1)), ("down.shortcut.0.bias", (4,)),
              ("down.shortcut.1.weight", (4,)), ("down.shortcut.1.bias", (4,)),
              ("fc.weight", (3, 4)), ("fc.bias", (3,))]

    def resnet_block(p, x):
        h = jax.nn.relu(batch_norm2d(p, "down.main.1", conv2d(p, "down.main.0", x, stride=2, pad=1)))
        main = batch_norm2d(p, "down.main.4", conv2d(p, "down.main.3", h, pad=1))
        shortcut = batch_norm2d(p, "down.shortcut.1", conv2d(p, "down.shortcut.0", x, stride=2))
        h = jax.nn.relu(main + shortcut)
        return dense(p, "fc", h.mean(axis=(2, 3)))

    cases.append(branch_case("resnet_block", shapes, resnet_block, draw(3, 2, 6, 6), np.array([1, 2, 0])))

    # kiln: input: [6], outer: Add { skip: {}, deep: {
    #   cat: Concat { p: Dense(3), q: Mul { r: Dense(3), s: { Dense(3), Sigmoid } } }, Tanh } },
    #   head: Dense(3)
    shapes = [("outer.deep.cat.p.weight", (3, 6)), ("outer.deep.cat.p.bias", (3,)),
              ("outer.deep.cat.q.r.weight", (3, 6)), ("outer.deep.cat.q.r.bias", (3,)),
              ("outer.deep.cat.q.s.0.weight", (3, 6)), ("outer.deep.cat.q.s.0.bias", (3,)),
              ("head.weight", (3, 6)), ("head.bias", (3,))]

    def nested(p, x):
        gate = dense(p, "outer.deep.cat.q.r", x) * jax.nn.sigmoid(dense(p, "outer.deep.cat.q.s.0", x))
        deep = jnp.tanh(jnp.concatenate([dense(p, "outer.deep.cat.p", x), gate], axis=-1))
        return dense(p, "head", x + deep)

    cases.append(branch_case("nested", shapes, nested, draw(3, 6), np.array([0, 2, 1])))
    return cases


fixture = {
    "generator": "scripts/reference/generate.py",
    "versions": {"jax": jax.__version__, "optax": optax.__version__, "numpy": np.__version__},
    "dense": dense_cases(),
    "softmax": softmax_cases(),
    "losses": loss_cases(),
    "models": model_cases() + [cnn_model_case()],
    "conv": conv_cases(),
    "pool": pool_cases(),
    "batch_norm": batch_norm_cases(),
    "optimizers": optimizer_cases(),
    # Last, so that its draws leave every value above as it was.
    "branch_models": branch_model_cases(),
}
OUT.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {OUT}")
