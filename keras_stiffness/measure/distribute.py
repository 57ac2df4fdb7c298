"""Measurement under ``tf.distribute``: who computes which share, and combining the shares' sums.

A measurement is a sum over block pairs ``(I, J)`` of probe ranges, and every figure it reports is a
fixed-shape sum (or maximum) over pairs. So a measurement spreads out without changing its result:

- Under a ``tf.distribute.MultiWorkerMirroredStrategy`` (several processes, usually several machines)
  worker ``k`` of ``W`` (:func:`worker_share`) computes its share of the block pairs, accumulates its
  NumPy summaries, and :func:`all_reduce` combines them with TensorFlow's own collective all-reduce
  (no sockets or files of our own); every worker gets the same combined arrays, and only the chief
  (:func:`is_chief`) writes. :func:`check_same_probes` first makes sure every worker measures the same
  probes.
- Under a ``tf.distribute.MirroredStrategy`` (one process, several devices) the block pairs are only
  placed on the replicas' devices (:func:`replica_devices`); the process holds every sum itself, so
  there is nothing to combine: :func:`all_reduce` returns copies.
- ``None``, the default strategy and ``OneDeviceStrategy``: one worker, nothing shared.

Worker indexing follows TensorFlow's own (``multi_worker_util.id_in_cluster``): the ``"chief"`` task, if
the cluster has one, is a worker like the others and has index 0; ``"worker"`` task ``t`` has index
``t + 1`` with a chief and ``t`` without. So ``W`` counts the chief and the workers, and the chief is
always the worker of index 0: the ``"chief"`` task, or ``"worker"`` task 0 when there is no chief.

Time bounds and lost workers. Every collective here carries ``timeout_seconds``
(``tf.distribute.experimental.CommunicationOptions``; default :data:`DEFAULT_TIMEOUT_SECONDS`): a worker
waiting longer than that for the others raises instead of hanging. Independently, the coordination
service that ``MultiWorkerMirroredStrategy`` starts sends heartbeats: when a worker process dies, the
survivors' pending and later collectives are aborted with ``UnavailableError`` once its heartbeats stop
(about 10 s with TensorFlow 2.21). Either way the functions here raise :class:`RuntimeError` (the
TensorFlow error as its cause). There is no recovery within the process: TensorFlow keeps every
collective of that process aborted ("Restart your program to reset"), and ``MultiWorkerMirroredStrategy``
is not elastic. TensorFlow's fault-tolerance story is checkpoint and restart: restart every worker with
the same command; the run file holds only complete measurements (combined, then written by the chief),
so nothing partial is left behind.

Limitations found with TensorFlow 2.21 on CPU:

- The strategy must be created before any TensorFlow op runs in the process (TensorFlow raises
  ``RuntimeError: Collective ops must be configured at program startup`` otherwise).
- The collective operations take ``float64`` and ``int64`` directly and sum them exactly as NumPy would
  (``int64`` sums wrap on overflow, as NumPy's do). ``tf.distribute.ReduceOp`` has no maximum, so
  "max" entries travel as a sum in which each worker fills only its own row of a ``(W, n)`` block
  (``x + 0 == x`` exactly), and the maximum over the rows is taken in NumPy: ``W`` times the bytes of
  the max entries, which are small.
- Workers whose entries differ in names, shapes, dtypes or ops would make TensorFlow fail on one
  worker and wait on the others; a small fixed-shape collective compares a digest of the layout first,
  so every worker raises the same :class:`ValueError` instead.
- Keras 3 ``model.fit`` under ``MultiWorkerMirroredStrategy`` is broken upstream (keras#20585): nothing
  here uses it.
- Call these functions eagerly (not inside ``tf.function`` or ``strategy.run``): they take and return
  NumPy arrays. Every worker must make the same calls in the same order (collectives pair up by order).

Example:
    >>> import numpy as np
    >>> worker_share(None), is_chief(None), replica_devices(None)
    ((0, 1), True, [])
    >>> out = all_reduce(None, {"count": np.array([3, 4]), "peak": np.array(2.5)}, {"count": "sum", "peak": "max"})
    >>> out["count"], out["peak"]
    (array([3, 4]), array(2.5))
"""

from __future__ import annotations

import hashlib
import string
import time
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from keras_stiffness.validation import check_int, check_positive_number

#: Seconds a collective may wait for the other workers before raising (``timeout_seconds`` default). It
#: must exceed the longest gap between the first and the last worker reaching the same call: workers that
#: finish their share early wait inside the collective for the slowest one.
DEFAULT_TIMEOUT_SECONDS = 600.0

#: How entries of :func:`all_reduce` combine across workers.
OPS = ("sum", "max")

_DIGEST_HEX = 15  # hex digits of a digest that travel as one int64 (60 bits: exact, never negative)
_SUPPORTED = "a NumPy float array (float16/32/64) or integer array (int8..int64, uint8..uint32)"


# ------------------------------------------------------------------------------------------------
# Who is who
# ------------------------------------------------------------------------------------------------
def _place(strategy) -> Tuple[int, int, Optional[str], Optional[int]]:
    """``(index, count, task_type, task_id)`` of this process; task type and id None when alone."""
    if strategy is None:
        return 0, 1, None, None
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            f"Received: strategy={strategy!r} of type {type(strategy).__name__}; expected None or a "
            "tf.distribute.Strategy (MirroredStrategy, MultiWorkerMirroredStrategy, OneDeviceStrategy). "
            "Pass the strategy object itself, e.g. tf.distribute.get_strategy()."
        )
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        raise TypeError(
            "Received: a ParameterServerStrategy; expected None, MirroredStrategy, OneDeviceStrategy or "
            "MultiWorkerMirroredStrategy: its workers run only the functions the coordinator sends, so they "
            "cannot share out a measurement. Measure on the coordinator with strategy=None."
        )
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0, 1, None, None  # one process: the default, Mirrored, OneDevice (and TPU) strategies
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return 0, 1, None, None  # a MultiWorkerMirroredStrategy on this machine only (no TF_CONFIG)
    task_type, task_id = resolver.task_type, resolver.task_id
    chiefs, workers = len(cluster.get("chief", ())), len(cluster.get("worker", ()))
    if task_type == "chief":
        return 0, chiefs + workers, task_type, int(task_id)
    if task_type == "worker":
        return chiefs + int(task_id), chiefs + workers, task_type, int(task_id)
    raise ValueError(
        f"Received: a MultiWorkerMirroredStrategy on task {task_type!r} {task_id!r}; expected a 'chief' or "
        "'worker' task: a measurement is shared among the chief and the workers only. Measure on other "
        "tasks (an evaluator) with strategy=None."
    )


def worker_share(strategy=None) -> Tuple[int, int]:
    """This process's place among the workers sharing a measurement: ``(index, count)``.

    Args:
        strategy: None (no distribution; the current ``strategy.scope()`` is not looked up: pass
            ``tf.distribute.get_strategy()`` for that) or a ``tf.distribute.Strategy``.

    Returns:
        ``(0, 1)`` for None and single-process strategies (default, ``MirroredStrategy``,
        ``OneDeviceStrategy``, and ``MultiWorkerMirroredStrategy`` without a cluster). For a
        ``MultiWorkerMirroredStrategy`` on a cluster: ``count`` = chief + worker tasks, ``index`` 0 for
        the chief and ``task_id + (1 if the cluster has a chief else 0)`` for a worker, as TensorFlow
        numbers them.

    Raises:
        TypeError: Not a strategy, or a ``ParameterServerStrategy``.
        ValueError: A ``MultiWorkerMirroredStrategy`` on a task other than chief or worker.

    Example:
        >>> worker_share(None)
        (0, 1)
    """
    index, count, _, _ = _place(strategy)
    return index, count


def is_chief(strategy=None) -> bool:
    """Whether this process is the one that writes: the worker of index 0 (see :func:`worker_share`).

    That is the ``"chief"`` task of ``TF_CONFIG`` when the cluster has one, else ``"worker"`` task 0;
    and always the process itself without a multi-worker strategy.

    Example:
        >>> is_chief(None)
        True
    """
    return worker_share(strategy)[0] == 0


def replica_devices(strategy=None) -> List[str]:
    """The devices of this worker's replicas, where its block pairs may be placed.

    Args:
        strategy: None or a ``tf.distribute.Strategy``.

    Returns:
        The full device strings of the replicas on this worker (``strategy.extended.worker_devices``):
        one per device of a ``MirroredStrategy``, this worker's local devices under a
        ``MultiWorkerMirroredStrategy``. ``[]`` for None and the default strategy: no placement, run
        where TensorFlow puts things.

    Example:
        >>> replica_devices(None)
        []
    """
    _place(strategy)  # the same checks as worker_share
    if strategy is None:
        return []
    try:
        return [str(device) for device in strategy.extended.worker_devices]
    except RuntimeError:  # the default strategy has no devices of its own
        return []


# ------------------------------------------------------------------------------------------------
# Checking what the workers pass
# ------------------------------------------------------------------------------------------------
def _check_timeout(timeout_seconds) -> Optional[float]:
    if timeout_seconds is None:
        return None
    return check_positive_number(timeout_seconds, "timeout_seconds", example="600 (or None for the strategy's own)")


def _check_entries(arrays: Mapping[str, np.ndarray], ops: Mapping[str, str]) -> List[Tuple[str, np.ndarray, str]]:
    """``(name, array, op)`` sorted by name, each array checked (not copied)."""
    if not isinstance(arrays, Mapping) or not isinstance(ops, Mapping):
        raise TypeError(
            f"Received: arrays of type {type(arrays).__name__} and ops of type {type(ops).__name__}; expected "
            "two mappings, name -> array and name -> 'sum' or 'max'. Pass dicts."
        )
    bad_names = [name for name in arrays if not isinstance(name, str)]
    if bad_names:
        raise TypeError(f"Received: array names {bad_names!r}; expected strings. Name every entry with a str.")
    missing, extra = sorted(set(arrays) - set(ops)), sorted(set(ops) - set(arrays), key=str)
    if missing or extra:
        raise ValueError(
            f"Received: arrays without an op {missing} and ops without an array {extra}; expected the same "
            "names in arrays and ops. Give every array one op, 'sum' or 'max'."
        )
    entries = []
    for name in sorted(arrays):
        op = ops[name]
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"Received: ops[{name!r}]={op!r}; expected one of {', '.join(map(repr, OPS))}.")
        value = np.asarray(arrays[name])
        kind, dtype = value.dtype.kind, value.dtype
        ok = (kind == "f" and dtype.itemsize <= 8) or kind == "i" or (kind == "u" and dtype.itemsize <= 4)
        if not ok:
            raise TypeError(
                f"Received: arrays[{name!r}] of dtype {dtype}; expected {_SUPPORTED}. Convert it, e.g. "
                f"arrays[{name!r}].astype(np.int64) for counts or .astype(np.float64) for sums."
            )
        entries.append((name, value, op))
    return entries


def _layout_digest(entries: List[Tuple[str, np.ndarray, str]]) -> int:
    layout = [(name, op, value.dtype.str, value.shape) for name, value, op in entries]
    return int(hashlib.sha256(repr(layout).encode()).hexdigest()[:_DIGEST_HEX], 16)


# ------------------------------------------------------------------------------------------------
# The collectives
# ------------------------------------------------------------------------------------------------
def _collective_sum(strategy, vector: np.ndarray, timeout: Optional[float], what: str, count: int) -> np.ndarray:
    """The element-wise sum of ``vector`` over all workers (float64 or int64), the same on every worker."""
    import tensorflow as tf

    if not tf.executing_eagerly():
        raise RuntimeError(
            f"Received: a call of {what} inside a tf.function (graph mode); expected an eager call: it takes and "
            "returns NumPy arrays. Call it from plain Python, outside tf.function."
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    tensor = tf.constant(vector)
    start = time.monotonic()
    try:
        result = strategy.extended.reduce_to(tf.distribute.ReduceOp.SUM, tensor, destinations=tensor, options=options)
        return np.array(result, dtype=vector.dtype)
    except tf.errors.OpError as exc:
        first = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else ""
        waited = f"timeout_seconds={timeout:g}" if timeout is not None else "the strategy's own timeout (if any)"
        raise RuntimeError(
            f"Received: {type(exc).__name__} from the collective of {what} across {count} workers after "
            f"{time.monotonic() - start:.1f} s ({first}); expected every worker to reach this call within "
            f"{waited}. A worker has stopped or is stuck: read every worker's log. TensorFlow keeps the "
            "collectives of this process aborted, so restart every worker (the run file holds only complete "
            "measurements); raise timeout_seconds if the workers' shares legitimately take longer."
        ) from exc


def _gather_rows(strategy, row: np.ndarray, index: int, count: int, timeout, what: str) -> np.ndarray:
    """Every worker's ``row`` (1-D) as a ``(count, len(row))`` array: a sum where each fills its own row."""
    block = np.zeros((count, row.size), dtype=row.dtype)
    block[index] = row
    return _collective_sum(strategy, block.reshape(-1), timeout, what, count).reshape(count, row.size)


def _concat(values: List[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate([v.astype(dtype, copy=False).reshape(-1) for v in values]) if values else np.zeros(0, dtype)


def all_reduce(
    strategy,
    arrays: Mapping[str, np.ndarray],
    ops: Mapping[str, str],
    *,
    timeout_seconds: Optional[float] = DEFAULT_TIMEOUT_SECONDS,
) -> Dict[str, np.ndarray]:
    """Combine every worker's arrays, entry by entry, with the strategy's collective all-reduce.

    Every worker calls this with the same names, shapes, dtypes and ops (only the values differ) and gets
    the same result. Float entries are combined in float64 and integer entries in int64, exactly (sums in
    the order of TensorFlow's ring; int64 sums wrap on overflow as NumPy's do), then returned in their
    own dtype and shape. At most three collectives run whatever the number of entries: one small
    fixed-shape check that every worker passes the same layout, one float64 vector and one int64 vector.

    Args:
        strategy: None or a ``tf.distribute.Strategy``. With one worker (see :func:`worker_share`) the
            result is a copy of ``arrays`` and TensorFlow is not touched.
        arrays: Name -> this worker's array (float16/32/64, or integers up to int64 / uint32).
        ops: Name -> ``"sum"`` or ``"max"`` (NaN wins a maximum, as in ``np.max``), for every name of
            ``arrays``.
        timeout_seconds: Seconds each collective may wait for the other workers before raising; None
            leaves the strategy's own ``communication_options``.

    Returns:
        Name -> combined array, with the shape and dtype of ``arrays[name]``, in the order of ``arrays``.

    Raises:
        TypeError: Not mappings, a non-string name, an unsupported dtype, or not a strategy.
        ValueError: Names of ``arrays`` and ``ops`` differ, an op is not "sum" or "max", a bad
            ``timeout_seconds``, an integer result that does not fit its dtype; or workers whose entries
            differ (raised on every worker).
        RuntimeError: A worker was lost or did not arrive within ``timeout_seconds`` (see the module's
            notes: restart every worker).

    Example:
        >>> all_reduce(None, {"n": np.array([1, 2], dtype=np.int32)}, {"n": "sum"})
        {'n': array([1, 2], dtype=int32)}
    """
    entries = _check_entries(arrays, ops)
    timeout = _check_timeout(timeout_seconds)
    index, count, _, _ = _place(strategy)
    if count == 1:
        return {name: np.array(arrays[name], copy=True) for name in arrays}
    _check_same_layout(strategy, entries, index, count, timeout)
    combined: Dict[str, np.ndarray] = {}
    for kinds, dtype in (("f", np.float64), ("iu", np.int64)):
        group = [entry for entry in entries if entry[1].dtype.kind in kinds]
        if not group:
            continue
        sums = [value for _, value, op in group if op == "sum"]
        maxes = [value for _, value, op in group if op == "max"]
        n_sum = sum(v.size for v in sums)
        n_max = sum(v.size for v in maxes)
        vector = np.zeros(n_sum + count * n_max, dtype=dtype)
        vector[:n_sum] = _concat(sums, dtype)
        vector[n_sum + index * n_max : n_sum + (index + 1) * n_max] = _concat(maxes, dtype)
        total = _collective_sum(strategy, vector, timeout, "all_reduce", count)
        peaks = total[n_sum:].reshape(count, n_max).max(axis=0) if n_max else total[n_sum:]
        at = {"sum": 0, "max": 0}
        for name, value, op in group:
            source = total[:n_sum] if op == "sum" else peaks
            combined[name] = _restore(source[at[op] : at[op] + value.size], value, name)
            at[op] += value.size
    return {name: combined[name] for name in arrays}


def _restore(flat: np.ndarray, like: np.ndarray, name: str) -> np.ndarray:
    """``flat`` in the shape and dtype of ``like``; integers checked to fit."""
    if like.dtype.kind in "iu" and like.dtype != np.int64 and flat.size:
        info = np.iinfo(like.dtype)
        low, high = int(flat.min()), int(flat.max())
        if low < info.min or high > info.max:
            raise ValueError(
                f"Received: arrays[{name!r}] of dtype {like.dtype} whose combined values span [{low}, {high}]; "
                f"expected them to fit {like.dtype} [{info.min}, {info.max}]. Pass it as int64."
            )
    return flat.reshape(like.shape).astype(like.dtype)


def _check_same_layout(strategy, entries, index: int, count: int, timeout) -> None:
    size = sum(value.size for _, value, _ in entries)
    row = np.array([_layout_digest(entries), len(entries), size], dtype=np.int64)
    rows = _gather_rows(strategy, row, index, count, timeout, "all_reduce (its layout check)")
    differ = [k for k in range(count) if not np.array_equal(rows[k], row)]
    if differ:
        others = "; ".join(f"worker {k}: {rows[k, 1]} arrays, {rows[k, 2]} values" for k in differ)
        raise ValueError(
            f"Received: all_reduce entries that differ between workers: this worker ({index} of {count}) has "
            f"{len(entries)} arrays, {size} values ({', '.join(name for name, _, _ in entries) or 'none'}); {others}. "
            "Expected the same names, shapes, dtypes and ops on every worker, only the values differing. "
            "Build the summaries with the same configuration and probe set on every worker."
        )


# ------------------------------------------------------------------------------------------------
# The probe set
# ------------------------------------------------------------------------------------------------
def check_same_probes(
    strategy,
    probe_hash: str,
    n: int,
    *,
    timeout_seconds: Optional[float] = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Raise on every worker unless all workers measure the same probe set.

    Each worker sends the first 60 bits of its hash (15 hex digits), the hash's length and ``N`` through
    one small collective, and compares what everyone sent; with one worker it only checks its
    arguments.

    Args:
        strategy: None or a ``tf.distribute.Strategy``.
        probe_hash: This worker's probe-set hash, a hexadecimal digest
            (:attr:`~keras_stiffness.data.probes.ProbeSet.hash`).
        n: This worker's number of probes ``N``.
        timeout_seconds: As in :func:`all_reduce`.

    Raises:
        ValueError: The workers' hashes or ``N`` differ (on every worker, naming this worker's hash and
            ``N`` and each differing worker's), or bad arguments.
        TypeError: ``probe_hash`` not a string, ``n`` not an integer.
        RuntimeError: A worker was lost or did not arrive in time.

    Example:
        >>> check_same_probes(None, "3fa9c0", 40)
    """
    if not isinstance(probe_hash, str):
        raise TypeError(
            f"Received: probe_hash={probe_hash!r} of type {type(probe_hash).__name__}; expected the probe "
            "set's hexadecimal hash string. Pass probes.hash."
        )
    digits = probe_hash.lower()
    if not digits or any(c not in string.hexdigits for c in digits):
        raise ValueError(
            f"Received: probe_hash={probe_hash!r}; expected a hexadecimal digest such as ProbeSet.hash. Pass "
            "probes.hash."
        )
    n = check_int(n, "n", fix="Pass len(probes).")
    timeout = _check_timeout(timeout_seconds)
    index, count, _, _ = _place(strategy)
    if count == 1:
        return
    row = np.array([int(digits[:_DIGEST_HEX], 16), len(digits), n], dtype=np.int64)
    rows = _gather_rows(strategy, row, index, count, timeout, "check_same_probes")
    differ = [k for k in range(count) if not np.array_equal(rows[k], row)]
    if differ:
        others = "; ".join(
            f"worker {k}: hash {int(rows[k, 0]):0{_DIGEST_HEX}x}..., N={int(rows[k, 2])}" for k in differ
        )
        raise ValueError(
            f"Received: probe sets whose hashes differ between workers: this worker ({index} of {count}) has "
            f"hash {digits} and N={n}; {others}. Expected the same probe set on every worker. Build it "
            "identically on every worker: the same data (same files, same order), the same seed and the same "
            "probe settings (per_class, val_per_class, targets)."
        )


def cluster_size_from_env(environ: Optional[Mapping[str, str]] = None) -> int:
    """Tasks (chief and workers) in the cluster ``TF_CONFIG`` describes; 1 without ``TF_CONFIG``.

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON with a ``cluster`` and a ``task``.

    Example:
        >>> conf = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}'
        >>> cluster_size_from_env({}), cluster_size_from_env({"TF_CONFIG": conf})
        (1, 2)
    """
    import json
    import os

    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        return 1
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf["task"]
        return len(cluster.get("chief", ())) + len(cluster.get("worker", ())) if task else 1
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"Received: TF_CONFIG={raw[:200]!r}; expected JSON with 'cluster' (task type -> addresses) and 'task' "
            '({"type": "worker", "index": 0}). Fix: set TF_CONFIG as tf.distribute documents, or unset it.'
        ) from exc


def strategy_from_env(timeout_seconds: Optional[float] = DEFAULT_TIMEOUT_SECONDS):
    """A ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster of several tasks, else None.

    Call it before anything else runs TensorFlow ops in the process (TensorFlow configures its
    collectives at startup).
    """
    if cluster_size_from_env() <= 1:
        return None
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
