"""What every Gram rule shares: the rule record, the captured data it receives, the Gram products.

Index letters used in every einsum of the rules (declared once):

- ``n``/``i``/``j``: probes (``i`` rows, ``j`` columns of a Gram block),
- ``t``/``s``: positions at which a layer applies its weights (sequence steps, conv output pixels,
  calls of a shared layer), flattened into one axis,
- ``d``: input features of one position (a conv patch: kernel taps × input channels),
- ``e``: output features of one position,
- ``k``: kernel taps, ``c``: channels, ``m``: depth multiplier.

A rule turns the captured inputs ``A`` (``(n, t, d)``) and output gradients ``Δ`` (``(n, t, e)``) of one
layer into ``{weight name: (N, N)}``. The per-example weight gradient of ``z = a W`` applied at
positions ``t`` is ``J_n = Σ_t a_nt ⊗ δ_nt``, so ``G_ij = Σ_{t,s} (a_it·a_js)(δ_it·δ_js)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from keras_stiffness import keras_compat
from keras_stiffness.engine.memory import BLOCK_ELEMENTS, MATERIALIZE_ELEMENTS


@dataclasses.dataclass
class CallRecord:
    """What one call of a layer left behind during the capture pass.

    Attributes:
        args: Positional arguments of ``call`` as NumPy arrays (non-tensors kept as given).
        kwargs: Keyword arguments of ``call`` likewise.
        values: Tapped tensors by tap name (``"out"`` = the (pre-activation) output), as arrays.
        grads: Gradient of the summed per-example loss at each tap (same keys as ``values``).
        output: The layer's (first) output during the capture pass; dropped once captured.
    """

    args: tuple
    kwargs: dict
    values: Dict[str, Any]
    grads: Dict[str, Any] = dataclasses.field(default_factory=dict)
    output: Any = None

    @property
    def inputs(self) -> np.ndarray:
        """The layer's main input (first positional argument, or ``inputs=``)."""
        if self.args:
            return self.args[0]
        return self.kwargs["inputs"]


@dataclasses.dataclass(frozen=True)
class Products:
    """How a rule's Gram products are formed: their precision, and which block of the Gram they fill.

    With ``split=None`` the products are the square ``(n, n)`` Gram of all ``n`` captured probes. With
    ``split=s`` the capture holds two blocks of probes stacked, rows ``[0, s)`` then ``[s, n)``, and
    the products fill only the cross block ``(s, n - s)`` between them: what a Gram block ``(I, J)``
    with ``I ≠ J`` needs, at a quarter of the cost of the square over both.

    Attributes:
        precision: ``"float32"`` or ``"float64"`` (see :data:`PRECISIONS`).
        split: ``None``, or the number of rows of the first block.
        block_elements: Largest product temporary, in elements (bounds the row blocks).

    Example:
        >>> Products().shape(5), Products(split=2).shape(5)
        ((5, 5), (2, 3))
    """

    precision: str = "float32"
    split: Optional[int] = None
    block_elements: int = BLOCK_ELEMENTS

    def shape(self, n: int) -> tuple:
        """Shape of a product block over ``n`` captured probes."""
        return (n, n) if self.split is None else (self.split, n - self.split)

    def sides(self, v):
        """``(left rows, right rows)`` of a probe-major factor: all of it twice, or the two blocks."""
        if self.split is None:
            return v, v
        return v[: self.split], v[self.split :]


def as_products(products) -> Products:
    """A :class:`Products` from itself or from a precision name."""
    return products if isinstance(products, Products) else Products(precision=products)


@dataclasses.dataclass
class LayerCapture:
    """All calls of one layer over all probes (arrays are probe-major, ``N`` rows).

    Attributes:
        calls: One record per call of the layer (shared layers are called several times).
        n: Number of probes.
        precision: Precision of the Gram products the rule should use (see :data:`PRECISIONS`).
        split: ``None`` for the square Gram of the ``n`` probes, or the rows of the first of two stacked
            probe blocks whose cross block is wanted (see :class:`Products`).
        block_elements: Largest product temporary, in elements.
    """

    calls: List[CallRecord]
    n: int
    precision: str = "float32"
    split: Optional[int] = None
    block_elements: int = BLOCK_ELEMENTS

    @property
    def products(self) -> Products:
        """How the rule forms its products (pass it to the product helpers below)."""
        return Products(precision=self.precision, split=self.split, block_elements=self.block_elements)


#: A rule's Gram function: ``(layer, captured) -> {weight name: block}``, each block of
#: ``captured.products.shape(captured.n)`` (float64 arrays, or tensors the engine sums in float64).
GramFn = Callable[[Any, LayerCapture], Dict[str, np.ndarray]]
#: A rule's forward: ``(layer, call, args, kwargs, tap) -> outputs``; ``tap(name, z)`` returns ``z``
#: plus a zero tensor whose gradient the engine reads back.
ForwardFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A Gram rule for one layer family.

    Attributes:
        name: Short name recorded per layer in results and run files (e.g. ``"dense"``).
        gram: The Gram function (see :data:`GramFn`).
        forward: How the layer is run during capture, with its taps. ``None`` taps the layer's output.
        unsupported: ``layer -> reason or None``; a reason sends that layer to the exact fallback.
        traceable: The Gram function works on symbolic tensors too (TensorFlow ops only, no NumPy on the
            captures), so the engine may run it inside one compiled graph with the other layers' (see
            :mod:`keras_stiffness.engine.traced`). A capture it cannot trace is computed eagerly.

    Example:
        >>> rule = Rule("scale", gram=lambda layer, captured: {})
        >>> rule.name, rule.forward is None, rule.unsupported(object())
        ('scale', True, None)
    """

    name: str
    gram: GramFn
    forward: Optional[ForwardFn] = None
    unsupported: Callable[[Any], Optional[str]] = lambda layer: None
    traceable: bool = False


def lora_or_quantized(layer) -> Optional[str]:
    """Why a Dense/Conv/Embedding rule does not apply: LoRA or quantization change which weights
    train and how the output is computed, so such layers go to the exact fallback."""
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled"
    if getattr(layer, "quantization_mode", None) is not None:
        return f"quantized ({layer.quantization_mode})"
    return None


def pre_activation_forward(layer, call, args, kwargs, tap):
    """Run ``layer.call`` with its activation removed, tap the pre-activation, then activate.

    Works for every Keras layer that ends its ``call`` with ``if self.activation is not None``
    (Dense, the convolutions). The attribute is restored in ``finally``.
    """
    activation = layer.activation
    with keras_compat.patched_attribute(layer, "activation", None):
        z = call(*args, **kwargs)
    z = tap("out", z)
    return z if activation is None else activation(z)


def is_tensor(value) -> bool:
    """Whether ``value`` is a TensorFlow tensor (eager, or symbolic inside a traced graph)."""
    import tensorflow as tf

    return tf.is_tensor(value)


def as_positions(a, n: int):
    """Reshape ``(n, ..., f)`` to ``(n, t, f)``: every leading non-probe axis becomes a position.

    A tensor stays a tensor (a traceable rule gets symbolic tensors); anything else becomes an array.
    """
    if is_tensor(a):
        import tensorflow as tf

        return tf.reshape(a, (n, -1, a.shape[-1]))
    a = np.asarray(a)
    return a.reshape(n, -1, a.shape[-1])


def concat_calls(arrays: List):
    """Concatenate per-call ``(n, t_c, f)`` arrays (or tensors) along positions: shared weights add up exactly."""
    if len(arrays) == 1:
        return arrays[0]
    if is_tensor(arrays[0]):
        import tensorflow as tf

        return tf.concat(arrays, axis=1)
    return np.concatenate(arrays, axis=1)


def _row_block(n: int, per_row: int, limit: int = BLOCK_ELEMENTS) -> int:
    return max(1, min(n, limit // max(1, per_row)))


#: The two product precisions: float32 products accumulated in float64 (the default, fast, and
#: exact to float32 rounding), or float64 throughout.
PRECISIONS = ("float32", "float64")


def compute_dtype(precision, *values):
    """The TensorFlow dtype of the products: float64 when asked, or when a factor already is float64."""
    import tensorflow as tf

    precision = as_products(precision).precision
    if precision == "float64" or any(getattr(v, "dtype", None) in (np.float64, tf.float64) for v in values):
        return tf.float64
    return tf.float32


def _tensor(v, dtype):
    import tensorflow as tf

    return tf.cast(tf.convert_to_tensor(v), dtype)


def _to_host(g) -> np.ndarray:
    """A product block back as a float64 NumPy array (accumulation across blocks/layers is float64)."""
    import tensorflow as tf

    return tf.cast(g, tf.float64).numpy()


def _flat_factor(v, products: Products):
    import tensorflow as tf

    v = _tensor(v, compute_dtype(products, v))
    return tf.reshape(v, (v.shape[0], -1))


def self_product(v, products="float32"):
    """``V Vᵀ`` (or its cross block, see :class:`Products`) as a TensorFlow tensor in the product
    precision, left where the factors live.

    For rules that combine several products before the float64 accumulation (see ``api._sum``).
    """
    import tensorflow as tf

    products = as_products(products)
    left, right = products.sides(_flat_factor(v, products))
    return tf.linalg.matmul(left, right, transpose_b=True)


def vector_gram(v, products="float32") -> np.ndarray:
    """``V Vᵀ`` (or its cross block) for per-example gradient vectors ``v`` of shape ``(n, ...)``, float64.

    The product is a TensorFlow matmul placed where the tensors live, in the products' precision (see
    :data:`PRECISIONS`), in row blocks of at most ``products.block_elements``.
    """
    import tensorflow as tf

    products = as_products(products)
    left, right = products.sides(_flat_factor(v, products))
    rows, cols = int(left.shape[0]), int(right.shape[0])
    step = _row_block(rows, cols, products.block_elements)
    if step >= rows:
        return _to_host(tf.linalg.matmul(left, right, transpose_b=True))
    out = np.empty((rows, cols))  # large N: row blocks, so no temporary beyond the result itself
    for lo in range(0, rows, step):
        out[lo : lo + step] = _to_host(tf.linalg.matmul(left[lo : lo + step], right, transpose_b=True))
    return out


def product_gram(a, d, products="float32") -> np.ndarray:
    """``(A Aᵀ) ⊙ (Δ Δᵀ)`` (or its cross block) for one position per example, in row blocks, float64."""
    import tensorflow as tf

    products = as_products(products)
    dt = compute_dtype(products, a, d)
    al, ar = products.sides(_tensor(a, dt))
    dl, dr = products.sides(_tensor(d, dt))
    rows, cols = int(al.shape[0]), int(ar.shape[0])
    step = _row_block(rows, 2 * cols, products.block_elements)
    if step >= rows:
        return _to_host(tf.linalg.matmul(al, ar, transpose_b=True) * tf.linalg.matmul(dl, dr, transpose_b=True))
    out = np.empty((rows, cols))
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        block = tf.linalg.matmul(al[lo:hi], ar, transpose_b=True) * tf.linalg.matmul(dl[lo:hi], dr, transpose_b=True)
        out[lo:hi] = _to_host(block)
    return out


def positions_cost(n: int, t: int, d: int, e: int) -> Dict[str, float]:
    """Multiply-adds of the two exact routes for a layer applied at ``t`` positions."""
    return {
        "factorized": float(n) * n * t * t * (d + e),
        "materialized": float(n) * t * d * e + float(n) * n * d * e,
    }


def positions_gram(a, d, route: Optional[str] = None, products="float32") -> np.ndarray:
    """Exact Gram of ``J_n = Σ_t a_nt ⊗ δ_nt`` for ``a`` ``(n, t, d)`` and ``δ`` ``(n, t, e)``.

    Args:
        a: Inputs per position.
        d: Output gradients per position.
        route: ``"factorized"`` (``Σ_{t,s}(a·a)(δ·δ)``), ``"materialized"`` (form ``J``), or
            ``None`` to take the cheaper by :func:`positions_cost`.
        products: A :class:`Products` (precision and block), or a precision name.

    Returns:
        ``products.shape(n)`` float64.
    """
    products = as_products(products)
    n, t, din = a.shape
    dout = d.shape[2]
    if t == 1:
        return product_gram(a[:, 0], d[:, 0], products)
    if route is None:
        cost = positions_cost(n, t, din, dout)
        route = min(cost, key=cost.get)
    if route == "factorized":
        return _factorized(a, d, products)
    return _materialized(a, d, products)


def _factorized(a, d, products: Products) -> np.ndarray:
    """``Σ_{t,s}(a_it·a_js)(δ_it·δ_js)``: products in their precision, the sum over position pairs in float64."""
    import tensorflow as tf

    dt = compute_dtype(products, a, d)
    a, d = _tensor(a, dt), _tensor(d, dt)
    t = int(a.shape[1])
    al, ar = products.sides(a)
    dl, dr = products.sides(d)
    rows, cols = int(al.shape[0]), int(ar.shape[0])
    ar2, dr2 = tf.reshape(ar, (cols * t, -1)), tf.reshape(dr, (cols * t, -1))
    out = np.empty((rows, cols))
    step = _row_block(rows, 2 * cols * t * t, products.block_elements)
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        aa = tf.linalg.matmul(tf.reshape(al[lo:hi], ((hi - lo) * t, -1)), ar2, transpose_b=True)
        aa = aa * tf.linalg.matmul(tf.reshape(dl[lo:hi], ((hi - lo) * t, -1)), dr2, transpose_b=True)
        aa = tf.cast(tf.reshape(aa, (hi - lo, t, cols, t)), tf.float64)
        out[lo:hi] = tf.reduce_sum(aa, axis=(1, 3)).numpy()
    return out


def per_example_outer(a, d, products="float32"):
    """``J_n = Σ_t a_nt ⊗ δ_nt`` flattened to ``(n, d·e)``: the per-example weight gradients (a tensor).

    A batched matrix product in the products' precision (TensorFlow, where the factors live).
    """
    import tensorflow as tf

    dt = compute_dtype(products, a, d)
    j = tf.linalg.matmul(_tensor(a, dt), _tensor(d, dt), transpose_a=True)
    return tf.reshape(j, (j.shape[0], -1))


def _materialized(a, d, products: Products) -> np.ndarray:
    import tensorflow as tf

    n, din = int(a.shape[0]), int(a.shape[2])
    width = din * int(d.shape[2])
    if n * width <= MATERIALIZE_ELEMENTS:
        return vector_gram(per_example_outer(a, d, products), products)
    # Too large to keep whole: form J in blocks of rows and recompute the column blocks.
    al, ar = products.sides(a)
    dl, dr = products.sides(d)
    rows, cols = int(al.shape[0]), int(ar.shape[0])
    step = max(1, MATERIALIZE_ELEMENTS // (2 * width))
    square = products.split is None
    out = np.empty((rows, cols))
    for lo in range(0, rows, step):
        ji = per_example_outer(al[lo : lo + step], dl[lo : lo + step], products)
        for lo2 in range(0, lo + 1 if square else cols, step):
            same = square and lo2 == lo
            jj = ji if same else per_example_outer(ar[lo2 : lo2 + step], dr[lo2 : lo2 + step], products)
            block = _to_host(tf.linalg.matmul(ji, jj, transpose_b=True))
            out[lo : lo + step, lo2 : lo2 + step] = block
            if square:
                out[lo2 : lo2 + step, lo : lo + step] = block.T
    return out
