"""Every assumption of keras_stiffness/keras_compat.py, checked directly against the installed Keras.

A failure names the broken assumption ("Keras upgrade broke assumption <name>: ..."); the fix goes in
keras_stiffness/keras_compat.py only. Also checks that no other package module uses Keras internals.
"""

from __future__ import annotations

import ast
import pathlib
import re

import keras
import numpy as np
import pytest

from keras_stiffness import keras_compat
from keras_stiffness.keras_compat import broken

PACKAGE = pathlib.Path(keras_compat.__file__).resolve().parent

#: The assumption each test below checks (kept in sync with keras_compat.ASSUMPTIONS).
TESTED = {
    "untracked_attribute",
    "flatten_layers",
    "builtin_layer_modules",
    "build_shapes_dict",
    "loss_function_wrapper",
    "instance_call_patch",
    "instance_activation_patch",
    "instance_batch_hook",
}


def _check(ok: bool, name: str, detail: str) -> None:
    if not ok:
        pytest.fail(broken(name, detail), pytrace=False)


def _x(n=5, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


class _Pair(keras.layers.Layer):
    def __init__(self, shared=None, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(3, name="first")
        self.second = shared if shared is not None else keras.layers.Dense(2, name="second")

    def call(self, x):
        return self.second(self.first(x))


class _Outer(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.last = keras.layers.Dense(3, name="last")
        self.pair = _Pair(shared=self.last, name="pair")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        return self.head(self.last(self.pair(x)))


# ------------------------------------------------------------------------ the module itself


def test_every_assumption_is_documented_and_tested():
    names = [a.name for a in keras_compat.ASSUMPTIONS]
    assert len(names) == len(set(names)), f"duplicate assumption names in keras_compat: {names}"
    assert set(names) == TESTED, (
        f"keras_compat.ASSUMPTIONS {sorted(names)} and the assumptions tested here {sorted(TESTED)} "
        "differ: add a test for each new assumption"
    )
    for a in keras_compat.ASSUMPTIONS:
        assert f"``{a.name}``" in keras_compat.__doc__, f"assumption {a.name} missing from the module docstring"
        assert a.reason and a.used_by, f"assumption {a.name} needs a reason and its users"


def test_compat_is_the_bottom_layer_and_imports_keras_lazily():
    tree = ast.parse((PACKAGE / "keras_compat.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            assert not module.startswith("keras_stiffness"), f"keras_compat imports {module}"
            if node in tree.body:  # module level
                assert module.split(".")[0] not in ("keras", "tensorflow"), f"top-level import of {module}"


#: Uses of Keras internals / instance patches that belong in keras_compat only.
_PRIVATE = [
    r"\._flatten_layers\b",
    r"\bkeras\.src\b",
    r"\bobject\.__(set|del)attr__\((?!self\b)",  # patching another object (a frozen dataclass may set self)
    r"\.on_train_batch_end\s*=",
    r"\._tracker\b",
    r"\._layers\b",
    r"\.__module__\b",
    r"_build_shapes_dict",  # telling Keras' own classes by the module that defines them
]


def test_no_other_module_touches_keras_internals():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keras_compat.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(p, line) for p in _PRIVATE):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}")
    assert not offenders, "Keras internals used outside keras_stiffness/keras_compat.py:\n" + "\n".join(offenders)


# ------------------------------------------------------------------------ one test per assumption


def test_flatten_layers():
    name = "flatten_layers"
    _check(hasattr(keras.layers.Layer, "_flatten_layers"), name, "keras.layers.Layer._flatten_layers is gone")
    outer = _Outer()
    outer(_x())
    pair, last, head = outer.pair, outer.last, outer.head
    direct = keras_compat.direct_sublayers(outer)
    _check(
        [id(s) for s in direct] == [id(last), id(pair), id(head)],
        name,
        f"_flatten_layers(include_self=False, recursive=False) gave {[s.name for s in direct]}, expected "
        "the direct sublayers in tracking order ['last', 'pair', 'head']",
    )
    every = keras_compat.all_layers(outer)
    expected = {id(outer), id(pair), id(pair.first), id(last), id(head)}
    _check(
        every[0] is outer and len(every) == len(expected) and {id(s) for s in every} == expected,
        name,
        f"_flatten_layers(include_self=True, recursive=True) gave {[s.name for s in every]}, expected the "
        "layer first, then every nested sublayer once (the shared one too)",
    )
    _check(keras_compat.direct_sublayers(head) == [], name, "a Dense layer reports sublayers")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    direct = [s for s in keras_compat.direct_sublayers(model) if s.trainable_variables]
    _check(
        [id(s) for s in direct] == [id(s) for s in model.layers],
        name,
        "a Sequential model's direct sublayers with weights differ from model.layers",
    )


class _UserLayer(keras.layers.Layer):
    def call(self, x):
        return x


class _UserDense(keras.layers.Dense):
    pass


def test_builtin_layer_modules():
    name = "builtin_layer_modules"
    builtins = [
        keras.layers.Dense(2),
        keras.layers.Conv2D(2, 3),
        keras.layers.LSTM(2),
        keras.layers.Bidirectional(keras.layers.LSTM(2)),
        keras.layers.MultiHeadAttention(2, 2),
        keras.Sequential(),
    ]
    for layer in builtins:
        _check(
            keras_compat.is_builtin_layer(layer),
            name,
            f"{type(layer).__name__} is defined in module {type(layer).__module__!r}, not under 'keras.'",
        )
    for layer in (_UserLayer(), _UserDense(2)):
        _check(
            not keras_compat.is_builtin_layer(layer),
            name,
            f"user class {type(layer).__name__} counts as built in ({type(layer).__module__!r})",
        )


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)


def test_build_shapes_dict():
    name = "build_shapes_dict"
    built, called, loaded = _Subclassed(), _Subclassed(), _Subclassed()
    built.build((None, 4))
    called(_x(3))
    loaded.build_from_config({"input_shape": (None, 4)})  # what loading a .keras file does
    for how, model, expected in (
        ("build()", built, (None, 4)),
        ("a first call", called, (3, 4)),
        ("build_from_config()", loaded, (None, 4)),
    ):
        got = keras_compat.build_input_shape(model)
        _check(
            got is not None and tuple(got) == expected,
            name,
            f"a subclassed model built by {how} has _build_shapes_dict {getattr(model, '_build_shapes_dict', None)!r}"
            f", expected {{'input_shape': {expected}}}",
        )
    _check(keras_compat.build_input_shape(_Subclassed()) is None, name, "an unbuilt model reports a build shape")


def test_loss_function_wrapper():
    name = "loss_function_wrapper"
    try:
        from keras.src.losses.losses import LossFunctionWrapper
    except ImportError as exc:
        pytest.fail(broken(name, f"keras.src.losses.losses.LossFunctionWrapper not importable ({exc})"), pytrace=False)
    _check(
        issubclass(LossFunctionWrapper, keras.losses.Loss), name, "LossFunctionWrapper is no longer a keras.losses.Loss"
    )
    rng = np.random.default_rng(0)
    x = _x(6)
    cases = [
        # (loss, units, labels): labels whose rank differs from the output's, aligned by the wrapper
        ("sparse_categorical_crossentropy", 3, rng.integers(0, 3, size=(6, 1))),
        ("mse", 1, rng.normal(size=(6,)).astype("float32")),
    ]
    for loss, units, y in cases:
        keras.utils.set_random_seed(0)
        activation = "softmax" if units > 1 else None
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])
        model.compile(loss=loss)
        compiled = float(model.evaluate(x, y, batch_size=len(x), verbose=0))
        per_example = np.asarray(keras_compat.wrap_loss_function(keras.losses.get(loss))(y, model(x)))
        _check(
            per_example.shape == (len(x),),
            name,
            f"LossFunctionWrapper({loss}).call gave shape {per_example.shape}, expected one value per "
            f"example {(len(x),)}",
        )
        _check(
            np.isclose(per_example.mean(), compiled, rtol=1e-5, atol=1e-6),
            name,
            f"mean of LossFunctionWrapper({loss}).call values {per_example.mean():.6g} differs from the "
            f"loss compile(loss={loss!r}) computes ({compiled:.6g})",
        )


@pytest.mark.parametrize("filtering", [True, False], ids=["traceback_filtering", "plain"])
def test_instance_call_patch(filtering):
    name = "instance_call_patch"
    was = keras.config.is_traceback_filtering_enabled()
    (keras.config.enable_traceback_filtering if filtering else keras.config.disable_traceback_filtering)()
    try:
        keras.utils.set_random_seed(0)
        dense = keras.layers.Dense(3)
        model = keras.Sequential([keras.Input((4,)), dense, keras.layers.Dense(2)])
        x = _x()
        before = np.asarray(model(x, training=False))
        n_weights = len(model.weights)
        original = dense.call
        calls = []

        def wrapper(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs) * 0.0

        with keras_compat.patched_attribute(dense, "call", wrapper):
            patched = np.asarray(model(x, training=False))
            direct = np.asarray(dense(x))
        _check(
            len(calls) == 2 and np.all(direct == 0.0),
            name,
            f"a call set on the instance was run {len(calls)} times for model(x) and layer(x), expected "
            "2: Layer.__call__ no longer looks up self.call on the instance",
        )
        _check(not np.allclose(patched, before), name, "the model's output ignored the patched call")
        _check("call" not in vars(dense), name, "the instance call was not removed on exit")
        _check(
            getattr(dense.call, "__func__", None) is type(dense).call,
            name,
            "after the patch, layer.call is not the class method again",
        )
        np.testing.assert_array_equal(np.asarray(model(x, training=False)), before)
        _check(len(model.weights) == n_weights, name, "patching call changed the tracked weights")
        with pytest.raises(KeyError), keras_compat.patched_attribute(dense, "call", wrapper):
            raise KeyError("boom")
        _check("call" not in vars(dense), name, "the instance call survived an exception")
    finally:
        (keras.config.enable_traceback_filtering if was else keras.config.disable_traceback_filtering)()


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda act: keras.layers.Dense(3, activation=act), _x(6, 4)),
        (lambda act: keras.layers.Conv2D(2, 3, activation=act), _x(2 * 5 * 5, 2).reshape(2, 5, 5, 2)),
    ],
    ids=["Dense", "Conv2D"],
)
def test_instance_activation_patch(make, x):
    name = "instance_activation_patch"
    keras.utils.set_random_seed(0)
    layer, linear = make("relu"), make(None)
    layer(x)
    linear(x)
    linear.set_weights(layer.get_weights())
    activation = layer.activation
    expected = np.asarray(linear(x))
    assert (expected < 0).any(), "test data must give negative pre-activations"
    with keras_compat.patched_attribute(layer, "activation", None):
        pre = np.asarray(layer.call(x))
        called = np.asarray(layer(x))
    for what, got in (("layer.call(x)", pre), ("layer(x)", called)):
        _check(
            np.allclose(got, expected, atol=1e-6),
            name,
            f"{type(layer).__name__}: {what} with activation=None on the instance is not the "
            "pre-activation output (call no longer reads self.activation at call time)",
        )
    _check(layer.activation is activation, name, f"{type(layer).__name__}.activation not restored")
    np.testing.assert_allclose(np.asarray(layer(x)), np.maximum(expected, 0), atol=1e-6)


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def hook(self, batch, logs=None):
        self.seen.append((batch, int(self.model.optimizer.iterations.numpy())))


def test_instance_batch_hook():
    name = "instance_batch_hook"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    hooked, plain = _Recorder(), _Recorder()
    keras_compat.install_batch_hook(hooked, hooked.hook)
    _check(
        "on_train_batch_end" not in vars(plain)
        and type(plain).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end,
        name,
        "installing a hook on one callback changed another instance or the class",
    )
    x, y = _x(8), np.arange(8) % 2
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[hooked, plain])
    _check(
        hooked.seen == [(0, 1), (1, 2)],
        name,
        f"the per-instance on_train_batch_end saw (batch, optimizer step) {hooked.seen}, expected "
        "[(0, 1), (1, 2)]: CallbackList no longer calls it once per batch, synchronously after the step",
    )
    _check(plain.seen == [], name, f"a callback without the hook had it called: {plain.seen}")


def test_untracked_attribute(tmp_path):
    name = "untracked_attribute"

    class Holder:
        pass

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    n_weights, n_layers = len(model.weights), len(model.layers)
    held = keras_compat.untracked_attribute(model, "_held", Holder)
    held.layer = model.layers[0]  # even a layer reachable through it is not state of the model
    _check(keras_compat.untracked_attribute(model, "_held", Holder) is held, name, "the value was made twice")
    _check(
        (len(model.weights), len(model.layers)) == (n_weights, n_layers),
        name,
        "an attribute set past __setattr__ changed the model's weights or layers",
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    _check("_held" not in vars(loaded), name, "the attribute came back from the saved file")
    _check(
        all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(model.weights, loaded.weights)),
        name,
        "saving a model with the attribute changed its weights on loading",
    )
