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
    value, grads = jax.value_and_grad(lambda p: loss(fwd(p, x), target))(params)
    return dict(model=name, x=flat(x), target=target_json,
                params=[v for pname, _ in shapes for v in flat(params[pname])],
                value=float(value),
                grads=[v for pname, _ in shapes for v in flat(grads[pname])])


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


fixture = {
    "generator": "scripts/reference/generate.py",
    "versions": {"jax": jax.__version__, "optax": optax.__version__, "numpy": np.__version__},
    "dense": dense_cases(),
    "softmax": softmax_cases(),
    "losses": loss_cases(),
    "models": model_cases(),
    "optimizers": optimizer_cases(),
}
OUT.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {OUT}")
