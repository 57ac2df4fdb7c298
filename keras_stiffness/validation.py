"""One helper per kind of check, shared by every room of the package. NumPy and the standard library only.

Each helper returns the value in canonical form (a Python ``int``, an int64 label vector, ...) or raises
with the house form of message: what was received, what was expected, and how to fix it. Type errors
(a float where an integer belongs) raise :class:`TypeError`; values of the right type out of range
raise :class:`ValueError`. NumPy integers count as integers everywhere; booleans never do.

Example:
    >>> check_int(np.int64(3), "bins")
    3
    >>> check_int(0, "bins")
    Traceback (most recent call last):
    ...
    ValueError: Received: bins=0; expected a positive integer.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Optional, Sequence, Tuple

import numpy as np

#: Values per chunk in chunked passes over large arrays (about 32 MB of float64).
CHUNK_VALUES = 1 << 22


def _ending(fix: str) -> str:
    return f" {fix}" if fix else ""


def is_int(value) -> bool:
    """True for Python and NumPy integers, False for booleans and everything else.

    Example:
        >>> is_int(np.int32(2)), is_int(True), is_int(2.0)
        (True, False, False)
    """
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, *, minimum: int = 1, fix: str = "") -> int:
    """``value`` as a Python int ``>= minimum`` (NumPy integers accepted, booleans refused).

    Args:
        value: The value to check.
        name: The argument's name, for the message.
        minimum: The smallest value allowed (1: a positive integer).
        fix: How the user fixes it, appended to the message.

    Raises:
        TypeError: Not an integer.
        ValueError: Below ``minimum``.

    Example:
        >>> check_int(np.int64(0), "min_count", minimum=0)
        0
    """
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if not is_int(value):
        raise TypeError(f"Received: {name}={value!r}; expected {expected}.{_ending(fix)}")
    if value < minimum:
        raise ValueError(f"Received: {name}={value!r}; expected {expected}.{_ending(fix)}")
    return int(value)


def check_optional_int(value, name: str, *, minimum: int = 1, fix: str = "") -> Optional[int]:
    """Like :func:`check_int`, but None passes through.

    Example:
        >>> check_optional_int(None, "every_n_steps") is None
        True
    """
    return None if value is None else check_int(value, name, minimum=minimum, fix=fix)


def check_seed(value, name: str = "seed") -> int:
    """A random seed: a non-negative integer.

    Example:
        >>> check_seed(np.uint8(7))
        7
    """
    return check_int(value, name, minimum=0, fix=f"Pass e.g. {name}=0.")


def check_positive_number(value, name: str, *, example: str = "1e-3") -> float:
    """A finite real number > 0 (booleans refused), as a float.

    Example:
        >>> check_positive_number(1e-3, "learning_rate")
        0.001
    """
    ok = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"Received: {name}={value!r}; expected a positive number such as {example}.")
    return float(value)


def check_fraction(value, name: str, *, fix: str = "") -> float:
    """A real number in ``[0, 1)``.

    Example:
        >>> check_fraction(0.2, "val_fraction")
        0.2
    """
    ok = isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok:
        raise TypeError(f"Received: {name}={value!r}; expected a number in [0, 1).{_ending(fix)}")
    if not 0 <= value < 1:
        raise ValueError(f"Received: {name}={value!r}; expected a number in [0, 1).{_ending(fix)}")
    return float(value)


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    Example:
        >>> check_choice("cosine", "metric", ("cosine", "euclidean"))
        'cosine'
    """
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Received: {name}={value!r}; expected one of {listed}.")
    return value


def check_finite(x, name: str = "x") -> None:
    """Raise if a float array holds NaN or Inf, saying how many and where (chunked: no big temporaries).

    Integer and empty arrays always pass.

    Raises:
        ValueError: Some values are not finite.

    Example:
        >>> check_finite(np.array([[1.0, np.nan], [np.inf, 2.0]]), "x")
        Traceback (most recent call last):
        ...
        ValueError: Received: x with 2 non-finite values (NaN or Inf) in 2 example(s), the first at x[0];
        expected finite inputs. Drop or impute those examples first.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.inexact) or x.size == 0:
        return
    flat = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
    rows = max(1, CHUNK_VALUES // max(1, flat.shape[1]))
    n_bad, bad_rows, first = 0, 0, None
    for i in range(0, len(flat), rows):
        bad = ~np.isfinite(flat[i : i + rows])
        if bad.any():
            per_row = bad.sum(axis=1)
            n_bad += int(per_row.sum())
            bad_rows += int(np.count_nonzero(per_row))
            if first is None:
                first = i + int(np.flatnonzero(per_row)[0])
    if n_bad:
        raise ValueError(
            f"Received: {name} with {n_bad} non-finite values (NaN or Inf) in {bad_rows} "
            f"example(s), the first at {name}[{first}]; expected finite inputs. Drop or impute "
            "those examples first."
        )


def check_square(matrix, name: str = "gram") -> np.ndarray:
    """``matrix`` as a finite, square float64 array.

    Raises:
        ValueError: Not square, or a non-finite entry (its position is named).

    Example:
        >>> check_square([[1, 0], [0, 1]]).dtype
        dtype('float64')
    """
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(
            f"Received: {name} with shape {arr.shape}; expected a square (N, N) matrix; "
            f"fix: pass the full matrix of all probes."
        )
    check_finite_entries(arr, name)
    return arr


def check_finite_entries(
    arr: np.ndarray, name: str, fix: str = "check the model's loss and gradients for NaN/inf."
) -> None:
    """Raise ValueError naming the first non-finite entry of a matrix (or block) ``arr``.

    Example:
        >>> check_finite_entries(np.array([[1.0, np.inf]]), "G", fix="recompute G.")
        Traceback (most recent call last):
        ...
        ValueError: Received: G with a non-finite entry at (0, 1); expected finite values; fix: recompute G.
    """
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"Received: {name} with a non-finite entry at {tuple(int(k) for k in bad)}; expected finite values; "
            f"fix: {fix}"
        )


def check_labels(y, name: str = "y") -> np.ndarray:
    """Class labels as a new 1-D int64 array.

    Accepted: integers (or booleans, or integer-valued floats) of shape ``(N,)`` or ``(N, 1)``, and
    one-hot rows of shape ``(N, C)`` with ``C >= 2`` (each row all zeros but a single one), which
    become class indices. Soft labels are refused. The range is checked by
    :func:`check_label_range`, which needs the number of classes.

    Raises:
        TypeError: Labels are not numeric.
        ValueError: Labels are not integer-valued, not one-hot, or of an unsupported rank.

    Example:
        >>> check_labels(np.eye(3)[[2, 0]])
        array([2, 0])
        >>> check_labels([1.0, 2.0])
        array([1, 2])
    """
    y = np.asarray(y)
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(
            f"Received: {name} of dtype {y.dtype}; expected integer class labels 0..C-1 (or one-hot "
            "rows). Map other labels to integers, e.g. names, y = np.unique(y, return_inverse=True)."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        ok = y.size == 0 or (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())
        if not ok:
            raise ValueError(
                f"Received: 2-D {name} of shape {y.shape} that is not one-hot (rows must be all 0 "
                "but a single 1); expected integer labels (N,) or one-hot (N, C). For soft labels, "
                f"pass {name}.argmax(axis=1) yourself."
            )
        return np.argmax(y, axis=1).astype(np.int64)
    elif y.ndim != 1:
        raise ValueError(
            f"Received: {name} of shape {y.shape}; expected integer labels of shape (N,) or (N, 1), "
            "or one-hot labels (N, C). Reshape the labels."
        )
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Received: {name} with {int(bad.sum())} non-integer values, the first "
                f"{name}[{first}]={y[first].item()!r}; expected integer class labels 0..C-1. "
                "Convert the labels to integers."
            )
    return y.astype(np.int64, copy=True)


def check_targets(y, name: str = "y") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Class ids for grouping, and the targets to keep for the loss when they are not plain ids.

    Integer labels (see :func:`check_labels`) give ``(ids, None)``. One-hot or soft labels, rows of
    ``C >= 2`` non-negative values summing to 1, give ``(argmax ids, the rows as float32)``: the loss
    needs them as given (``categorical_crossentropy``), the class matrices need the ids.

    Raises:
        ValueError: Multi-label rows (several 1s: no single class to group by), rows that do not sum
            to 1, negative or non-finite values; and what :func:`check_labels` refuses.
        TypeError: Labels that are not numeric.

    Example:
        >>> ids, targets = check_targets(np.array([[0.0, 1.0], [0.7, 0.3]]))
        >>> ids.tolist(), targets.dtype
        ([1, 0], dtype('float32'))
        >>> check_targets([2, 0])[1] is None
        True
    """
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        return check_labels(y, name), None
    values = arr.astype(np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(
            f"Received: 2-D {name} of shape {arr.shape} with negative or non-finite values; expected one-hot or "
            f"soft labels (rows of non-negative values summing to 1), or integer labels (N,). Fix the targets."
        )
    sums = values.sum(axis=1)
    several = np.isin(values, (0.0, 1.0)).all(axis=1) & (sums > 1)
    if several.any():
        row = int(np.flatnonzero(several)[0])
        raise ValueError(
            f"Received: multi-label {name} (row {row} has {int(sums[row])} ones); expected one class per "
            "example (integer, one-hot or soft labels): class matrices group examples by a single class. "
            "Measure multi-label models with gradient_gram directly."
        )
    bad = np.abs(sums - 1.0) > 1e-4
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Received: 2-D {name} whose row {row} sums to {sums[row]:g}; expected one-hot or soft labels "
            f"summing to 1 per row, or integer labels (N,). Normalize the rows or pass class ids."
        )
    return np.argmax(values, axis=1).astype(np.int64), arr.astype(np.float32)


def check_label_range(y, n_classes: int, name: str = "y", *, fix: str = "") -> np.ndarray:
    """Integer labels ``y`` (any shape) checked to lie in ``[0, n_classes)``; returned as int64.

    Args:
        y: Integer class labels (see :func:`check_labels` for other forms).
        n_classes: The number of classes ``C``.
        name: The argument's name, for the message.
        fix: How the user fixes it (default: remap the labels or pass more classes).

    Raises:
        TypeError: Non-integer labels.
        ValueError: A label outside the range (how many, the first one, the span).

    Example:
        >>> check_label_range(np.array([0, 2]), 2)
        Traceback (most recent call last):
        ...
        ValueError: Received: y with 1 label(s) outside [0, 2) (first y[1]=2; labels span [0, 2]);
        expected integers 0..1 for n_classes=2. Remap the labels (e.g. np.unique(y, return_inverse=True))
        or pass n_classes/class_names covering them.
    """
    arr = np.asarray(y)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(
            f"Received: {name} of dtype {arr.dtype}; expected integer class indices; "
            f"fix: pass np.asarray({name}).astype(int) (or argmax of one-hot labels)."
        )
    flat = arr.reshape(-1)
    bad = (flat < 0) | (flat >= n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Received: {name} with {int(bad.sum())} label(s) outside [0, {n_classes}) (first "
            f"{name}[{first}]={int(flat[first])}; labels span [{int(flat.min())}, {int(flat.max())}]); "
            f"expected integers 0..{n_classes - 1} for n_classes={n_classes}. "
            + (
                fix
                or "Remap the labels (e.g. np.unique(y, return_inverse=True)) or pass "
                "n_classes/class_names covering them."
            )
        )
    return arr.astype(np.int64)


def nearest_existing(path: str) -> str:
    """The path itself or its nearest ancestor that exists.

    Example:
        >>> nearest_existing("/")
        '/'
    """
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return existing


def check_writable(path: str, *, overwrite: bool, exists_fix: str = "", make_parents: bool = False) -> None:
    """Refuse, before anything is written, a path where a new file cannot be created.

    Args:
        path: The file to create.
        overwrite: Whether an existing file may be replaced.
        exists_fix: How the caller's user fixes an existing file.
        make_parents: The caller creates missing folders: then the nearest existing ancestor must
            be a writable folder; otherwise the parent folder must exist.

    Raises:
        NotADirectoryError: A parent of ``path`` is a file.
        FileNotFoundError: The parent folder does not exist (and ``make_parents`` is False).
        PermissionError: The folder is not writable.
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     check_writable(os.path.join(folder, "run.h5"), overwrite=False)
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        ancestor = nearest_existing(parent)
        if not os.path.isdir(ancestor):
            raise NotADirectoryError(
                f"Received: path={path!r}; expected a path in a directory, but {ancestor!r} is a "
                "file. Choose another path."
            )
        if not make_parents:
            raise FileNotFoundError(
                f"Received: path={path!r}; expected a path in an existing directory, but {parent!r} "
                "does not exist. Create it first (os.makedirs(directory, exist_ok=True))."
            )
        parent = ancestor
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Received: path={path!r}; expected a writable directory, but {parent!r} is not "
            "writable. Choose another directory or change its permissions."
        )
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"Received: path={path!r}, which is a directory; expected a file path such as "
            f"{os.path.join(path, 'run.h5')!r}."
        )
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"Received: path={path!r}, which already exists; expected a new file."
            + _ending(exists_fix or "Pass overwrite=True to replace it.")
        )


def check_names(values, name: str) -> Tuple[str, ...]:
    """A sequence of strings (not a bare string) as a tuple.

    Example:
        >>> check_names(["a", "b"], "layers")
        ('a', 'b')
    """
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"Received: {name}={values!r}; expected a sequence of str.")
    return tuple(values)


#: Byte units a memory budget may be written in (binary and decimal).
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
#: The smallest budget a measurement accepts: below it the blocks would be a handful of probes.
MIN_MEMORY_BUDGET = 2**24


def check_memory_budget(value, name: str = "memory_budget") -> int:
    """A memory budget in bytes: a positive integer, or a string such as ``"2GiB"``, ``"512 MB"``, ``"1.5GiB"``.

    Raises:
        TypeError: Not an integer or a string.
        ValueError: An unknown unit, or less than 16 MiB.

    Example:
        >>> check_memory_budget("2GiB"), check_memory_budget("1.5 GB"), check_memory_budget(2**30)
        (2147483648, 1500000000, 1073741824)
    """
    if isinstance(value, str):
        import re

        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _BYTE_UNITS:
            raise ValueError(
                f"Received: {name}={value!r}; expected bytes as an integer or a number with a unit "
                "among B, KB, MB, GB, KiB, MiB, GiB (e.g. '2GiB' or '500MB')."
            )
        size = int(float(match.group(1)) * _BYTE_UNITS[unit])
    elif isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        size = int(value)
    else:
        raise TypeError(f"Received: {name}={value!r}; expected bytes as an integer or a string such as '2GiB'.")
    if size < MIN_MEMORY_BUDGET:
        raise ValueError(f"Received: {name}={value!r} ({size} bytes); expected at least 16MiB. Fix: pass e.g. '2GiB'.")
    return size
