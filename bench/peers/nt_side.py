"""The neural-tangents side of the peer benchmark; runs in the peer venv (bench/peers/.venv: jax 0.4.23,
neural-tangents 0.6.5, numpy<2), never in the project venv. ``peer_bench.py`` calls it as a subprocess.

It loads the probes and the Keras weights that ``peer_bench.py`` saved, rebuilds the SAME network with
``jax.example_libraries.stax`` (whose layouts are Keras's: Dense kernel ``(in, out)``, ``y = x @ W + b``;
Conv kernel ``(kh, kw, in, out)`` = HWIO on NHWC inputs; ``"SAME"`` padding, max pooling 2×2 with stride 2
and ``"SAME"`` padding as Keras's ``MaxPooling2D(2, padding="same")``; Flatten row-major over H, W, C),
and times neural-tangents' structured empirical NTK of the *per-example loss*:

    f(params, inputs) -> (n,)   with inputs = [flattened probe | one-hot label] along the feature axis,

so that ``ntk[i, j] = sum over all weights of dL_i/dθ · dL_j/dθ`` with ``trace_axes=()``: exactly the
stiffness Gram ``gradient_gram(...).total``. (neural-tangents has no MaxPool layer in ``nt.stax``, hence
JAX's own ``stax``; the NTK implementation sees only the traced JAX function either way.)

The loss is Keras's ``sparse_categorical_crossentropy`` on softmax probabilities, written out as Keras's
TensorFlow backend computes it with ``from_logits=False``: clip the probabilities to ``[1e-7, 1 - 1e-7]``,
take their log, then softmax cross-entropy of those "logits" against the label.

Usage (normally only through peer_bench.py):
    python nt_side.py IN.npz OUT.npz [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural-tangents imports TensorFlow (via tf2jax)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from jax.example_libraries import stax  # noqa: E402

EPSILON = 1e-7  # keras.backend.epsilon()


def build(arch: str, input_shape: tuple, n_classes: int):
    """``(init_fn, apply_fn)`` of the logits network: the Keras model without its final softmax."""
    if arch == "mlp":
        layers = [stax.Flatten]
        for units in (500, 300, 100):
            layers += [stax.Dense(units), stax.Relu]
        layers += [stax.Dense(n_classes)]
    elif arch == "cnn":
        layers = []
        for channels in (16, 32, 32):
            layers += [
                stax.Conv(channels, (3, 3), strides=(1, 1), padding="SAME"),
                stax.Relu,
                stax.MaxPool((2, 2), strides=(2, 2), padding="SAME"),
            ]
        layers += [stax.Flatten, stax.Dense(n_classes)]
    else:
        raise ValueError(f"unknown arch {arch!r}")
    return stax.serial(*layers)


def keras_params(init_fn, input_shape: tuple, weights: list):
    """The stax parameter tree filled with the Keras weights (in Keras's order: kernel, bias, ...)."""
    _, template = init_fn(jax.random.PRNGKey(0), (-1, *input_shape))
    flat, treedef = jax.tree_util.tree_flatten(template)
    if len(flat) != len(weights):
        raise ValueError(f"stax has {len(flat)} weight arrays, Keras {len(weights)}")
    out = []
    for slot, w in zip(flat, weights):
        if slot.size != w.size or slot.shape[-1] != w.shape[-1]:
            raise ValueError(f"shape mismatch: stax {slot.shape} vs Keras {w.shape}")
        out.append(jnp.asarray(w.reshape(slot.shape), dtype=jnp.float32))  # conv bias (C,) -> (1, 1, 1, C)
    return jax.tree_util.tree_unflatten(treedef, out)


def loss_fn(apply_fn, input_shape: tuple, n_features: int):
    """``f(params, inputs) -> (n,)`` per-example loss; ``inputs = [x flattened | one-hot y]``."""

    def f(params, inputs):
        x = inputs[:, :n_features].reshape((-1, *input_shape))
        onehot = inputs[:, n_features:]
        probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
        log_probs = jnp.log(jnp.clip(probs, EPSILON, 1.0 - EPSILON))
        return -jnp.sum(onehot * jax.nn.log_softmax(log_probs, axis=-1), axis=-1)

    return f


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inp")
    parser.add_argument("out")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    data = np.load(args.inp)
    arch = str(data["arch"])
    input_shape = tuple(int(d) for d in data["input_shape"])
    n_features = int(np.prod(input_shape))
    inputs = jnp.asarray(np.concatenate([data["x"], data["onehot"]], axis=1), dtype=jnp.float32)
    n_weights = int(data["n_weights"])
    weights = [data[f"w{k}"] for k in range(n_weights)]

    init_fn, apply_fn = build(arch, input_shape, int(data["onehot"].shape[1]))
    params = keras_params(init_fn, input_shape, weights)
    f = loss_fn(apply_fn, input_shape, n_features)

    ntk = nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES)
    ntk_jit = jax.jit(lambda z, p: ntk(z, None, p))

    start = time.perf_counter()
    gram = ntk_jit(inputs, params).block_until_ready()  # warm-up: tracing + XLA compilation
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        gram = ntk_jit(inputs, params).block_until_ready()
        times.append(time.perf_counter() - start)

    losses = np.asarray(jax.jit(f)(params, inputs))
    probs = np.asarray(jax.nn.softmax(apply_fn(params, inputs[:, :n_features].reshape((-1, *input_shape))), axis=-1))
    clipped = float(np.mean((probs < EPSILON) | (probs > 1.0 - EPSILON)))
    info = {
        "jax": jax.__version__,
        "jaxlib": metadata.version("jaxlib"),
        "neural_tangents": metadata.version("neural-tangents"),
        "numpy": np.__version__,
        "device": str(jax.devices()[0]),
        "first_call_s": first,
        "clipped_fraction": clipped,
    }
    np.savez(
        args.out,
        gram=np.asarray(gram),
        times=np.asarray(times),
        losses=losses,
        info=json.dumps(info),
    )
    print(f"nt_side {arch}: shape {gram.shape}, median {statistics.median(times):.3f} s, first call {first:.2f} s")


if __name__ == "__main__":
    main()
