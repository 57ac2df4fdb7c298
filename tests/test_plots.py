"""plot_run / plot_sweep on run files written from synthetic Measurements (no TensorFlow).

Figure content is checked on the Figure objects that the public functions save (``build_figures``,
``build_sweep``); the public functions are checked for the files they write.
"""

import math
import struct
import warnings

import numpy as np
import pytest

from keras_stiffness.math.distance import critical_length
from keras_stiffness.math.record import Measurement
from keras_stiffness.plots import run_figures as plots, sweep as plots_sweep
from keras_stiffness.store.layout import RunInfo
from keras_stiffness.store.reader import open_run
from keras_stiffness.store.writer import RunWriter

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ALL_SETS = ("train-train", "train-val", "val-val")
LAYERS = ("dense", "dense_1", "dense_2", "dense_3")
SPACES = ("input", "dense", "dense_1", "dense_2")
MIN_COUNT = 10


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def make_measurement(
    t,
    n,
    *,
    n_classes=10,
    pair_sets=ALL_SETS,
    measures=("sign", "cos"),
    layers=LAYERS,
    spaces=SPACES,
    bins=20,
    metric="cosine",
    lr=1e-3,
    loss_scale=1.0,
    log2_steps=10,
    fit_factor=1.1,
    seed=0,
):
    """Measurement ``t`` of ``n``: stiffness decaying along training, log-spaced steps, with NaNs.

    NaNs: train loss at init, the last class column of train-val (a class without held-out probes),
    empty distance bins, ξ where the curve starts below 0, every third fitted ξ of the deepest space.
    Distance bins in the tails hold fewer than MIN_COUNT pairs.
    """
    rng = np.random.default_rng(1000 * seed + t)
    frac = t / max(1, n - 1)
    step = 0 if t == 0 else int(round(2 ** (log2_steps * frac)))
    loss = math.nan if t == 0 else loss_scale * 2.3 * math.exp(-4.0 * frac)
    p_, m_, c_, r_ = len(pair_sets), len(measures), n_classes, len(spaces)
    scale = np.array([1.0 if m == "sign" else 0.55 for m in measures])
    cm = np.empty((p_, m_, c_, c_))
    for p in range(p_):
        base = np.full((c_, c_), -0.6 * (1 - frac) + 0.05) + 0.15 * rng.standard_normal((c_, c_))
        base[np.arange(c_), np.arange(c_)] = 0.95 * (1 - 0.7 * frac)
        cm[p] = np.clip((1.0 if p == 0 else 0.7) * scale[:, None, None] * base, -1, 1)
    if "train-val" in pair_sets:
        cm[pair_sets.index("train-val"), :, :, c_ - 1] = np.nan
    counts = np.full((p_, c_, c_), 2500, dtype=np.int64)
    off = ~np.eye(c_, dtype=bool)
    within = np.array([[np.nanmean(np.diag(cm[p, k])) for k in range(m_)] for p in range(p_)])
    between = np.array([[np.nanmean(cm[p, k][off]) for k in range(m_)] for p in range(p_)])
    depth = np.linspace(1.0, 0.4, len(layers))[:, None, None]
    edges, curve = np.zeros((r_, bins + 1)), np.full((r_, m_, bins), np.nan)
    count, xi, xi_fit = np.zeros((r_, bins), np.int64), np.full((r_, m_), np.nan), np.full((r_, m_), np.nan)
    for r in range(r_):
        hi = 2.0 if metric == "cosine" else 10.0 * 3**r
        edges[r] = np.linspace(0.0, hi, bins + 1)
        centres = 0.5 * (edges[r, :-1] + edges[r, 1:])
        count[r] = (4000 * np.exp(-(((centres / hi * 2 - 0.9 + 0.12 * r) / 0.25) ** 2))).astype(np.int64)
        length = (0.55 - 0.08 * r) * (1 - 0.4 * frac) * hi / 2
        for k in range(m_):
            y = scale[k] * np.tanh(4.0 * (length - centres) / hi) + 0.03 * rng.standard_normal(bins)
            y[count[r] == 0] = np.nan
            curve[r, k] = y
            xi[r, k] = critical_length(centres, y, count[r], MIN_COUNT)
            xi_fit[r, k] = math.nan if (r == r_ - 1 and t % 3 == 1) else fit_factor * length
    return Measurement(
        step=step,
        epoch=step / 100,
        train_loss=loss,
        val_loss=loss * 1.3,
        learning_rate=lr,
        wall_time=3.0 * t,
        pair_sets=tuple(pair_sets),
        measures=tuple(measures),
        class_matrix=cm,
        class_pairs=counts,
        within=within,
        between=between,
        mean=0.1 * within + 0.9 * between,
        pairs=counts.sum(axis=(1, 2)),
        layers=tuple(layers),
        layer_mean=depth * (0.1 * within + 0.9 * between),
        layer_within=depth * within,
        layer_between=depth * between,
        spaces=tuple(spaces),
        distance_edges=edges,
        curve_mean=curve,
        curve_count=count,
        critical_length=xi,
        critical_length_fit=xi_fit,
    )


def make_info(m, n_classes=10, metric="cosine", config=None):
    """The RunInfo of a run of measurements like ``m``."""
    names = CIFAR if n_classes == 10 else [f"class_{i}" for i in range(n_classes)]
    has_val = len(m.pair_sets) > 1
    labels = np.repeat(np.arange(n_classes), 4 if has_val else 2)
    info = RunInfo(
        class_names=names,
        probe_labels=labels,
        probe_indices=np.arange(labels.size),
        probe_is_val=np.tile([False, False, True, True] if has_val else [False, False], n_classes),
        probe_hash="synthetic",
        pair_sets=m.pair_sets,
        measures=m.measures,
        layers=m.layers,
        spaces=m.spaces,
        bins=m.distance_edges.shape[-1] - 1,
        metric=metric,
        min_count=MIN_COUNT,
        save_gram=False,
        config=config if config is not None else {"train": {"lr": m.learning_rate, "epochs": 10}},
        model_summary="",
        loss="sparse_categorical_crossentropy",
        rules={},
        versions={},
    )
    return info


def write_run(path, n=6, *, n_classes=10, metric="cosine", config=None, **kw):
    """A run file of ``n`` synthetic measurements; returns its path as a string."""
    ms = [make_measurement(t, n, n_classes=n_classes, metric=metric, **kw) for t in range(n)]
    writer = RunWriter.create(str(path), make_info(ms[0], n_classes, metric, config))
    for row in ms:
        writer.append(row)
    writer.close()
    return str(path)


class MemoryRun:
    """A Run look-alike over Measurements, for what a run file cannot hold: no spaces (the store needs
    R >= 1), no measurements."""

    def __init__(self, ms, info):
        self.path, self.info, self._ms = "memory.h5", info, ms
        self.pair_sets, self.measures, self.layers, self.spaces = (
            info.pair_sets,
            info.measures,
            info.layers,
            ms[0].spaces if ms else info.spaces,
        )
        self.config = info.config

    def __len__(self):
        return len(self._ms)

    @property
    def tags(self):
        return {k: np.array([getattr(m, k) for m in self._ms], float) for k in ("step", "epoch", "train_loss")}

    def series(self, name):
        return np.stack([getattr(m, name) for m in self._ms])

    def measurement(self, i, *, gram=True):
        return self._ms[i]


def figures(path, at=None, measure="sign"):
    with open_run(path) as run:
        rows = plots._resolve_at(at, len(run))
        data = plots.load_run(run, sorted(set(rows) | {0, len(run) - 1}))
    return data, plots.build_figures(data, rows, measure)


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "full.h5", n=6)


def test_plot_run_writes_five_pngs(full_run, tmp_path):
    out = tmp_path / "new" / "figs"
    paths = plots.plot_run(full_run, out, prefix="lr1e-3_")
    assert [p.name for p in paths] == [f"lr1e-3_{s}.png" for s in plots.FILES]
    for p in paths:
        width, height = png_size(p)
        assert 600 <= width <= 2400 and 400 <= height <= 1600, (p.name, width, height)


def test_plot_run_accepts_an_open_run_and_leaves_it_open(full_run, tmp_path):
    with open_run(full_run) as run:
        paths = plots.plot_run(run, tmp_path, at=[-1], measure="cos")
        assert len(run) == 6 and run.measurement(5).step > 0
    assert len(paths) == 5


def test_class_matrices_fixed_scale_labels_and_grey_nan(full_run):
    data, figs = figures(full_run)
    fig = figs["class_matrices"]
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6  # (train-train, train-val) x (first, middle, last)
    for ax in panels:
        image = ax.images[0]
        assert image.get_clim() == (-1.0, 1.0) and image.get_cmap().name.startswith("RdBu_r")
    colorbars = [ax for ax in fig.axes if not ax.images]
    assert len(colorbars) == 1 and "sign stiffness" in colorbars[0].get_ylabel()
    assert panels[0].get_ylabel().endswith("class of X1 (step taken)")
    assert panels[-1].get_xlabel() == "class of X2 (measured)"
    assert [t.get_text() for t in panels[0].get_yticklabels()] == CIFAR
    assert [t.get_text() for t in panels[-1].get_xticklabels()] == CIFAR
    titles = [ax.get_title() for ax in panels[:3]]
    assert "step 0 (init)" in titles[0] and "train loss n/a" in titles[0]
    assert f"step {int(data.tags['step'][-1])}" in titles[2] and "epoch" in titles[2]
    train_val = np.ma.getmaskarray(panels[3].images[0].get_array())
    assert train_val[:, -1].all() and not train_val[:, :-1].any()  # NaN column masked -> grey
    assert panels[0].images[0].get_cmap().get_bad()[:3] == pytest.approx((0.7, 0.7, 0.7))


def test_class_matrices_at_selects_columns(full_run):
    _, figs = figures(full_run, at=[-1, 1])
    panels = [ax for ax in figs["class_matrices"].axes if ax.images]
    assert len(panels) == 4 and "step 0" not in panels[0].get_title()


def test_training_figure_axes(full_run):
    _, figs = figures(full_run, measure="cos")
    axes = figs["stiffness_vs_training"].axes
    epoch_ax, loss_ax = axes[2], axes[3]
    assert epoch_ax.get_xscale() == "symlog" and "0 = init" in epoch_ax.get_xlabel()
    assert loss_ax.xaxis_inverted() and "decreasing" in loss_ax.get_xlabel()
    assert loss_ax.get_xscale() == "log"
    assert all(any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.lines) for ax in axes)  # line at 0
    assert len(axes[0].lines) == 1 + 3 * 2  # zero line + pair sets x measures
    legends = [t.get_text() for leg in figs["stiffness_vs_training"].legends for t in leg.get_texts()]
    assert legends == ["train–train", "train–val", "val–val", "sign", "cos (chosen)"]


def test_distance_figure_leaves_out_low_count_bins(full_run):
    data, figs = figures(full_run)
    ax = figs["stiffness_vs_distance"].axes[0]
    last = data.rows[data.n - 1]
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 2]
    assert len(solid) == len(SPACES)
    for r, line in enumerate(solid):
        centres = 0.5 * (last.distance_edges[r, :-1] + last.distance_edges[r, 1:])
        shown = np.asarray(line.get_xdata())[np.isfinite(line.get_ydata())]
        low = centres[last.curve_count[r] < MIN_COUNT]
        assert low.size and not np.isin(low, shown).any()
        assert np.isin(centres[(last.curve_count[r] >= MIN_COUNT) & np.isfinite(last.curve_mean[r, 0])], shown).all()
    xi_lines = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    assert xi_lines == pytest.approx([x for x in last.critical_length[:, 0] if np.isfinite(x)])
    labels = [t.get_text() for leg in figs["stiffness_vs_distance"].legends for t in leg.get_texts()]
    assert labels[0].startswith("input: ξ = ") and all("fit" in s for s in labels[: len(SPACES)])
    assert labels[len(SPACES)].startswith("last: step 1024,\nepoch 10.2,\ntrain loss")
    assert labels[len(SPACES) + 1].startswith("first: step 0 (init)")
    assert figs["stiffness_vs_distance"].axes[1].get_xlabel() == "distance 1 − cos(R1, R2)"


def test_critical_length_keeps_nan_gaps(full_run):
    data, figs = figures(full_run)
    ax = figs["critical_length"].axes[0]
    fit_deepest = [line for line in ax.lines if line.get_linestyle() == "--"][-1]
    y = np.asarray(fit_deepest.get_ydata())
    assert y.size == data.n and np.array_equal(np.isnan(y), np.isnan(data.series["critical_length_fit"][:, -1, 0]))
    assert np.isnan(y).any()


def test_critical_length_beyond_the_distance_range_marked_at_the_top(tmp_path):
    path = write_run(tmp_path / "far.h5", n=3, fit_factor=100.0)  # fitted ξ ~ 30-60 > 2 = max of 1 − cos
    data, figs = figures(path)
    ax = figs["critical_length"].axes[0]
    drawn = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines if line.get_marker() != "^"])
    assert np.nanmax(drawn) <= 2.0 and ax.get_ylim()[1] < 2.0
    fits = data.series["critical_length_fit"][:, :, 0]
    assert np.isnan(fits).sum() == 1  # the deepest space at t = 1
    assert sum(len(line.get_xdata()) for line in ax.lines if line.get_marker() == "^") == np.sum(fits > 2) == 11
    texts = [t.get_text() for leg in figs["critical_length"].legends for t in leg.get_texts()]
    assert "beyond the distance\nrange (> 2)" in texts


@pytest.mark.parametrize(
    "case, kw, expected",
    [
        ("one measurement, euclidean", dict(n=1, metric="euclidean"), plots.FILES),
        ("no val", dict(n=3, pair_sets=("train-train",)), plots.FILES),
        ("100 classes", dict(n=2, n_classes=100, pair_sets=("train-train",), spaces=("input",)), plots.FILES),
    ],
)
def test_plot_run_edge_cases(tmp_path, case, kw, expected):
    path = write_run(tmp_path / "run.h5", **kw)
    paths = plots.plot_run(path, tmp_path / "out")
    assert [p.stem for p in paths] == list(expected), case
    assert all(png_size(p)[0] > 500 for p in paths)


def test_no_spaces_skips_distance_figures(tmp_path):
    ms = [make_measurement(t, 3, pair_sets=("train-train",), spaces=()) for t in range(3)]
    run = MemoryRun(ms, make_info(make_measurement(0, 1, pair_sets=("train-train",))))
    paths = plots.plot_run(run, tmp_path)
    assert [p.stem for p in paths] == ["class_matrices", "stiffness_vs_training", "layer_stiffness"]


def test_many_classes_no_annotation_thinned_ticks(tmp_path):
    path = write_run(tmp_path / "c100.h5", n=1, n_classes=100, pair_sets=("train-train",), spaces=("input",))
    _, figs = figures(path)
    (panel,) = [ax for ax in figs["class_matrices"].axes if ax.images]
    assert not panel.texts and len(panel.get_xticklabels()) == 20


def test_plot_run_errors(full_run, tmp_path):
    with pytest.raises(ValueError, match=r"Received: measure='sgn'; expected one of \['sign', 'cos'\]"):
        plots.plot_run(full_run, tmp_path, measure="sgn")
    with pytest.raises(ValueError, match=r"Received: at=\[6\]; expected integer measurement indices in \[-6, 6\)"):
        plots.plot_run(full_run, tmp_path, at=[6])
    with pytest.raises(ValueError, match=r"Received: at=\[\]; expected a non-empty sequence"):
        plots.plot_run(full_run, tmp_path, at=[])
    with pytest.raises(TypeError, match="Received: run_or_path of type int"):
        plots.plot_run(3, tmp_path)
    empty = tmp_path / "empty.h5"
    RunWriter.create(str(empty), make_info(make_measurement(0, 1))).close()
    with pytest.raises(ValueError, match="empty.h5' with no measurements; expected at least one"):
        plots.plot_run(empty, tmp_path)


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """Three learning rates, given out of order; the runs end at different epochs and losses."""
    d = tmp_path_factory.mktemp("sweep")
    return [
        write_run(d / f"lr{lr:g}.h5", n=n, lr=lr, loss_scale=s, log2_steps=k, seed=j)
        for j, (lr, n, s, k) in enumerate([(1e-3, 5, 1.5, 10), (1e-4, 6, 2.0, 9), (3e-4, 7, 1.0, 11)])
    ]


def row_titles(fig):
    """The matching rule written over each row of a sweep figure."""
    return [sub._suptitle.get_text() for sub in fig.subfigs]


def test_plot_sweep_match_epoch_and_loss(sweep_runs, tmp_path):
    out = plots.plot_sweep(sweep_runs, tmp_path / "a" / "sweep.png")
    assert out == tmp_path / "a" / "sweep.png" and png_size(out)[0] > 800
    with plots.style():
        fig = plots_sweep.build_sweep(sweep_runs, match="epoch")
    assert len(fig.axes) == 2 and len(fig.subfigs) == 1
    ax_xi, ax_s = fig.axes[:2]
    assert ax_xi.get_xscale() == "log" and ax_s.get_xscale() == "log"
    solid = [line for line in ax_xi.lines if line.get_linestyle() == "-"]
    assert [line.get_label() for line in solid] == list(SPACES)
    assert list(solid[0].get_xdata()) == [1e-4, 3e-4, 1e-3]
    assert not [c for ax in fig.axes for c in ax.collections]  # one seed per learning rate: no bands
    # last common epoch: the shortest run's last step, 2**9 / 100 = 5.12
    (title,) = row_titles(fig)
    assert "last common epoch, 5.12" in title and "Learning-rate sweep (3 runs)" in fig._suptitle.get_text()
    runs = [plots_sweep._read(p, "sign") for p in sweep_runs]
    points, _, _ = plots_sweep.match_points(runs, "epoch")
    assert [pt.epoch for pt in points] == [5.12, 5.75, 1.81]  # closest to 5.12 in each run, by lr
    assert "matched epochs 1.81–5.75" in title
    points, target, what = plots_sweep.match_points(runs, "loss")
    finals = [r.train_loss[-1] for r in runs]
    assert target == max(finals) and "largest final train loss, of lr0.0001," in what
    for run, pt in zip(sorted(runs, key=lambda r: r.lr), points):  # decreasing losses: the first reaching it
        assert pt.index == plots_sweep.first_reaching(run.train_loss, target)
        assert pt.train_loss <= target or pt.index == np.flatnonzero(run.train_loss <= target)[0] - 1


def test_plot_sweep_default_draws_both_matchings(sweep_runs):
    with plots.style():
        fig = plots_sweep.build_sweep(sweep_runs)
    assert len(fig.axes) == 4 and len(fig.subfigs) == 2
    epoch_row, loss_row = row_titles(fig)
    assert epoch_row.startswith("Matched at the last common epoch, 5.12\n(the last epoch every run reached")
    # write_run's runs have no probe_loss: fit's logged loss, and the figure says so
    assert loss_row.startswith("Matched at a common train loss (fit's logged loss) ≈ ")
    assert "the largest final train loss, of lr0.0001" in loss_row


def loss_run(path, lr, losses, *, probe_losses=None, seed=0):
    """A run whose measurement i has train loss ``losses[i]`` (and probe loss ``probe_losses[i]``)."""
    n = len(losses)
    ms = [make_measurement(t, n, lr=lr, seed=seed) for t in range(n)]
    for t, m in enumerate(ms):
        m.train_loss = losses[t]
        if probe_losses is not None:
            m.probe_loss = probe_losses[t]
    writer = RunWriter.create(str(path), make_info(ms[0]))
    for m in ms:
        writer.append(m)
    writer.close()
    return str(path)


def test_matched_loss_known_index(tmp_path):
    """Target = the largest final loss (0.3, of the slow run); each run at the first measurement reaching
    it, or the one just before when closer in log loss, never at a late spike back up to the target."""
    nan = math.nan
    slow = loss_run(tmp_path / "slow.h5", 1e-3, [nan, 2.0, 1.0, 0.5, 0.3])
    # fast: 0.4 (index 2) is closer to 0.3 in log loss than 0.1 (index 3); the spike at index 5 equals it
    fast = loss_run(tmp_path / "fast.h5", 1e-2, [nan, 1.0, 0.4, 0.1, 0.05, 0.3, 0.02])
    # faster: first at or below 0.3 is index 2 (0.25), closer than 0.9 (index 1)
    faster = loss_run(tmp_path / "faster.h5", 1e-1, [nan, 0.9, 0.25, 0.01, 0.3, 0.001])
    runs = [plots_sweep._read(p, "sign") for p in (fast, slow, faster)]
    points, target, what = plots_sweep.match_points(runs, "loss")
    assert target == 0.3 and "of slow," in what and "fit's logged loss" in what
    assert [(pt.lr, pt.index, pt.train_loss) for pt in points] == [(1e-3, 4, 0.3), (1e-2, 2, 0.4), (1e-1, 2, 0.25)]
    # the probes' loss, where recorded, takes precedence over fit's logged loss
    probe = loss_run(tmp_path / "probe.h5", 1e-2, [nan, 5.0, 5.0, 5.0, 5.0], probe_losses=[2.5, 1.0, 0.29, 0.2, 0.1])
    runs = [plots_sweep._read(p, "sign") for p in (slow, probe)]
    points, target, what = plots_sweep.match_points(runs, "loss")
    assert target == 0.3 and [pt.index for pt in points] == [4, 2]
    assert "train loss (on the probes where recorded, else fit's logged loss)" in what
    assert plots_sweep.first_reaching(np.array([nan, 2.0, 1.0, 0.5, 0.2, 0.6]), 0.6) == 3


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """2 learning rates x 2 seeds (seed recorded as config["train"]["init_seed"], as kstiff train does)."""
    d = tmp_path_factory.mktemp("seeds")
    return [
        write_run(
            d / f"lr{lr:g}-seed{seed}.h5",
            n=5,
            lr=lr,
            loss_scale=1.0 + seed,
            seed=7 * seed + i,
            config={"train": {"lr": lr, "seed": 0, "init_seed": seed}},
        )
        for i, lr in enumerate([1e-3, 1e-2])
        for seed in (0, 1)
    ]


def test_sweep_over_seeds_draws_mean_and_band(seed_runs, tmp_path):
    from matplotlib.collections import PolyCollection

    with plots.style():
        fig = plots_sweep.build_sweep(seed_runs)
    assert "4 runs: 2 learning rates × 2 seeds" in fig._suptitle.get_text()
    assert len(fig.axes) == 4
    runs = [plots_sweep._read(p, "sign") for p in seed_runs]
    for row, match in enumerate(("epoch", "loss")):
        ax_xi, ax_s = fig.axes[2 * row : 2 * row + 2]
        bands_xi = [c for c in ax_xi.collections if isinstance(c, PolyCollection)]
        bands_s = [c for c in ax_s.collections if isinstance(c, PolyCollection)]
        assert len(bands_xi) == 2 * len(SPACES)  # zero crossing and linear fit, per space
        assert len(bands_s) == 2 * len(ALL_SETS)  # within and between, per pair set
        for ax in (ax_xi, ax_s):
            texts = [t.get_text() for legend in ax_legends(ax) for t in legend.get_texts()]
            assert any("n = 2 seeds" in t and "min–max" in t for t in texts), texts
        # the drawn line is the mean over the two seeds of each learning rate
        points, _, _ = plots_sweep.match_points(runs, match)
        assert [pt.seed for pt in points] == [0, 1, 0, 1]
        within = [line for line in ax_s.lines if line.get_label() == "within, train–train"][0]
        assert list(within.get_xdata()) == [1e-3, 1e-2]
        expected = [np.mean([pt.within["train-train"] for pt in points if pt.lr == lr]) for lr in (1e-3, 1e-2)]
        np.testing.assert_allclose(within.get_ydata(), expected)
        verts = bands_s[1].get_paths()[0].vertices  # the between train-train band: min-max at each lr
        for lr in (1e-3, 1e-2):
            values = [pt.between["train-train"] for pt in points if pt.lr == lr]
            assert min(values) < max(values)
            np.testing.assert_allclose(np.unique(verts[verts[:, 0] == lr, 1]), [min(values), max(values)])
    out = plots.plot_sweep(seed_runs, tmp_path / "seeds.png")
    assert png_size(out)[1] > png_size(out)[0] * 0.8  # two rows


def ax_legends(ax):
    return [a for a in ax.get_children() if a.__class__.__name__ == "Legend"]


def test_band_partial_and_undefined_values():
    pts = [
        plots_sweep.SweepPoint("a", 1e-3, 0, 1.0, 0.1, np.array([0.2]), np.array([0.3]), {}, {}, seed=0),
        plots_sweep.SweepPoint("b", 1e-3, 0, 1.0, 0.1, np.array([0.4]), np.array([0.3]), {}, {}, seed=1),
        plots_sweep.SweepPoint("c", 1e-3, 0, 1.0, 0.1, np.array([np.nan]), np.array([0.3]), {}, {}, seed=2),
        plots_sweep.SweepPoint("d", 1e-2, 0, 1.0, 0.1, np.array([np.nan]), np.array([0.3]), {}, {}, seed=0),
    ]
    groups = plots_sweep.group_by_lr(pts[::-1])
    assert [len(g) for g in groups] == [3, 1] and groups[0][0].lr == 1e-3
    b = plots_sweep.band(groups, lambda pt: pt.xi[0])
    np.testing.assert_allclose(b.mean, [0.3, np.nan])
    np.testing.assert_allclose(b.lo, [0.2, np.nan])
    np.testing.assert_allclose(b.hi, [0.4, np.nan])
    assert list(b.defined) == [2, 0] and list(b.n) == [3, 1]


def test_sweep_needs_two_learning_rates(seed_runs):
    with pytest.raises(ValueError, match=r"all at learning rate 0.001; expected at least 2 learning rates"):
        plots_sweep.build_sweep(seed_runs[:2])


def test_plot_sweep_errors(sweep_runs, tmp_path):
    with pytest.raises(ValueError, match="Received: 1 run file.*expected at least 2"):
        plots.plot_sweep(sweep_runs[:1], tmp_path / "s.png")
    other = write_run(tmp_path / "other.h5", n=2, spaces=("input", "dense"))
    with pytest.raises(ValueError, match="different distance spaces.*'input', 'dense'"):
        plots.plot_sweep([sweep_runs[0], other], tmp_path / "s.png")
    no_lr = write_run(tmp_path / "no_lr.h5", n=2, lr=math.nan, config={})
    with pytest.raises(ValueError, match="no_lr.h5' with no learning rate recorded"):
        plots.plot_sweep([sweep_runs[0], no_lr], tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"Received: match='step'; expected one of \('both', 'epoch', 'loss'\)"):
        plots.plot_sweep(sweep_runs, tmp_path / "s.png", match="step")
