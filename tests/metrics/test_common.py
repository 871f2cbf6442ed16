"""Common checks over every metric in apkit's METRICS registry, after scikit-learn's
``sklearn/metrics/tests/test_common.py``.

Every registered metric is classified in ``METRIC_TABLE`` by the arguments it takes, and in the
property sets below it by the invariances it has.  The checks are parametrised over those tables,
so each metric's checks are separate test ids, and a newly registered metric fails
``test_every_registered_metric_is_classified`` until it is added to the table.

Oracles: scikit-learn (ROC-AUC, average precision, F1) and naive Python loops (pointing game,
relevance mass, cosine, normalised L2, top-1).  Property-based checks use Hypothesis with a fixed
seed (``derandomize=True``) and no example database, so runs are reproducible.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from apkit.core.errors import ValidationError
from apkit.metrics import (
    METRICS,
    cosine_similarity,
    f1_samples,
    normalized_l2,
    per_class_average_precision,
    per_image_average_precision,
    pointing_game,
    relevance_mass,
    roc_auc,
    top1_accuracy,
)

# ------------------------------------------------------------------------------------------------
# the table: every registered metric, by signature
# ------------------------------------------------------------------------------------------------

MAP = "map"  # f(maps (N, H, W), masks (N, H, W))
PAIR = "pair"  # f(a (N, H, W), b (N, H, W))
CLASSIFICATION = "classification"  # f(scores (N, C), labels (N, C))

METRIC_TABLE = {
    # name: (public function, kind, what the result holds one value per)
    "roc_auc": (roc_auc, MAP, "map"),
    "pointing_game": (pointing_game, MAP, "map"),
    "relevance_mass": (relevance_mass, MAP, "map"),
    "cosine_similarity": (cosine_similarity, PAIR, "pair"),
    "normalized_l2": (normalized_l2, PAIR, "pair"),
    "per_image_average_precision": (per_image_average_precision, CLASSIFICATION, "image"),
    "per_class_average_precision": (per_class_average_precision, CLASSIFICATION, "class"),
    "f1_samples": (f1_samples, CLASSIFICATION, "image"),
    "top1_accuracy": (top1_accuracy, CLASSIFICATION, "image"),
}

# Invariances, as scikit-learn's lists of metrics with a property.
# Depend on the order of the values only: invariant to any strictly increasing transform.
ORDER_ONLY = {"roc_auc", "pointing_game", "per_image_average_precision", "per_class_average_precision", "top1_accuracy"}
# Invariant to multiplying the maps / scores by a positive number (both arguments of a pair metric).
POSITIVE_SCALE_INVARIANT = ORDER_ONLY | {"relevance_mass", "cosine_similarity", "normalized_l2"}
# The same permutation of the pixels of maps and masks leaves the value unchanged.
PIXEL_PERMUTATION_INVARIANT = {"roc_auc", "relevance_mass", "cosine_similarity", "normalized_l2"}
SYMMETRIC = {"cosine_similarity", "normalized_l2"}

# Result dtypes a docstring fixes whatever the input's; every other metric keeps float32 as float32
# and float64 as float64.
FIXED_DTYPE = {"roc_auc": torch.float64}


def _names(kind):
    return [name for name, (_, k, _) in METRIC_TABLE.items() if k == kind]


MAP_METRICS, PAIR_METRICS, CLASSIFICATION_METRICS = _names(MAP), _names(PAIR), _names(CLASSIFICATION)
ALL_METRICS = list(METRIC_TABLE)


def _kind(name):
    return METRIC_TABLE[name][1]


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="CUDA variant: torch.cuda.is_available() is False on this machine",
        ),
    ),
]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]

PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------------

# Multiples of 1/16 in [-3, 3]: exact in float32 and float64; exp, 3x + 2 and (after a shift to >= 0) x**3
# keep them distinct (the last two exactly), so these transforms keep every tie and every order.
GRID = tuple(k / 16 for k in range(-48, 49))
EXACT = ("levels", "grid")
ALL_VALUES = ("levels", "grid", "float")
MODERATE = ("levels", "grid", "moderate")
MASK_DTYPES = (torch.bool, torch.uint8, torch.int64, torch.float32)
LABEL_DTYPES = (torch.bool, torch.float32, torch.int64)


@st.composite
def _values(draw, shape, modes):
    """A float64 array of values exactly representable in float32."""
    mode = draw(st.sampled_from(modes))
    if mode == "levels":  # one to three distinct values: heavy ties
        levels = draw(st.lists(st.sampled_from(GRID), min_size=1, max_size=3, unique=True))
        elements = st.sampled_from(levels)
    elif mode == "grid":  # moderate ties
        elements = st.sampled_from(GRID)
    elif mode == "float":  # anything finite, subnormals included
        elements = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
    else:  # "moderate": zero or 2**-10 <= |x| <= 2**10 (no underflow when squared in float32)
        elements = st.one_of(
            st.just(0.0),
            st.floats(2.0**-10, 2.0**10, width=32),
            st.floats(-(2.0**10), -(2.0**-10), width=32),
        )
    return draw(hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def map_batches(draw, modes=ALL_VALUES, both_classes=False):
    """(maps, masks): 1-4 maps of 2-8 x 2-8 pixels, float32 or float64; masks of varied binary dtypes.

    ``both_classes``: every mask has at least one positive and one negative pixel.
    """
    n, h, w = draw(st.integers(1, 4)), draw(st.integers(2, 8)), draw(st.integers(2, 8))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    maps = torch.from_numpy(draw(_values((n, h, w), modes))).to(dtype)
    mask = draw(hnp.arrays(np.bool_, (n, h * w)))
    if both_classes:
        for i in range(n):
            pos, neg = draw(st.lists(st.integers(0, h * w - 1), min_size=2, max_size=2, unique=True))
            mask[i, pos], mask[i, neg] = True, False
    masks = torch.from_numpy(mask.reshape(n, h, w)).to(draw(st.sampled_from(MASK_DTYPES)))
    return maps, masks


@st.composite
def pair_batches(draw, modes=MODERATE):
    """(a, b): 1-4 pairs of maps of 2-8 x 2-8 pixels, both float32 or both float64."""
    n, h, w = draw(st.integers(1, 4)), draw(st.integers(2, 8)), draw(st.integers(2, 8))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    a = torch.from_numpy(draw(_values((n, h, w), modes))).to(dtype)
    b = torch.from_numpy(draw(_values((n, h, w), modes))).to(dtype)
    return a, b


@st.composite
def score_batches(draw, modes=ALL_VALUES, max_images=6):
    """(scores, labels): 1-``max_images`` images of 2-6 classes; multi-hot labels of varied dtypes."""
    n, c = draw(st.integers(1, max_images)), draw(st.integers(2, 6))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    scores = torch.from_numpy(draw(_values((n, c), modes))).to(dtype)
    labels = torch.from_numpy(draw(hnp.arrays(np.bool_, (n, c))))
    return scores, labels.to(draw(st.sampled_from(LABEL_DTYPES)))


STRATEGY = {MAP: map_batches, PAIR: pair_batches, CLASSIFICATION: score_batches}


def _draw_inputs(data, name, modes):
    if _kind(name) == MAP:
        # roc_auc is NaN without both classes; the invariances are only interesting where it is defined
        return data.draw(map_batches(modes=modes, both_classes=name == "roc_auc"))
    return data.draw(STRATEGY[_kind(name)](modes=modes))


# ------------------------------------------------------------------------------------------------
# oracles (NumPy / Python, float64)
# ------------------------------------------------------------------------------------------------


def _rows(x):
    """Each item of a batch as a flat float64 NumPy vector."""
    return x.detach().cpu().reshape(x.shape[0], -1).double().numpy()


def sk_roc_auc(maps, masks, ignore=None):
    out = []
    keep_rows = _rows(ignore) == 0 if ignore is not None else None
    for i, (s, y) in enumerate(zip(_rows(maps), _rows(masks) != 0)):
        if keep_rows is not None:
            s, y = s[keep_rows[i]], y[keep_rows[i]]
        out.append(roc_auc_score(y, s) if y.any() and not y.all() else math.nan)
    return np.array(out)


def naive_pointing(maps, masks, tolerance=0):
    """The first maximum in row-major order; a hit when a mask pixel is at distance < max(t, 1)."""
    radius = max(tolerance, 1)
    out = []
    for m, y in zip(maps.tolist(), masks.tolist()):
        h, w = len(m), len(m[0])
        flat = [v for row in m for v in row]
        best = 0
        for k, v in enumerate(flat):
            if v > flat[best]:
                best = k
        pr, pc = divmod(best, w)
        if not any(v for row in y for v in row):
            out.append(math.nan)
            continue
        hit = any(
            y[r][c] for r in range(h) for c in range(w) if (r - pr) ** 2 + (c - pc) ** 2 < radius**2
        )
        out.append(float(hit))
    return np.array(out)


def naive_relevance_mass(maps, masks):
    out = []
    for s, y in zip(_rows(maps), _rows(masks) != 0):
        positive = [max(v, 0.0) for v in s]
        total = sum(positive)
        inside = sum(p for p, on in zip(positive, y) if on)
        out.append(inside / total if total > 0 and y.any() else math.nan)
    return np.array(out)


def naive_cosine(a, b):
    out = []
    for x, y in zip(_rows(a), _rows(b)):
        nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
        out.append(sum(p * q for p, q in zip(x, y)) / (nx * ny) if nx > 0 and ny > 0 else math.nan)
    return np.array(out)


def naive_l2(a, b):
    out = []
    for x, y in zip(_rows(a), _rows(b)):
        nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
        if nx == 0 or ny == 0:
            out.append(math.nan)
            continue
        out.append(math.sqrt(sum((p / nx - q / ny) ** 2 for p, q in zip(x, y))))
    return np.array(out)


def sk_average_precision_rows(scores, labels):
    out = []
    for s, y in zip(_rows(scores), _rows(labels) != 0):
        out.append(average_precision_score(y, s) if y.any() else math.nan)
    return np.array(out)


def naive_first_argmax(row):
    best = 0
    for k, v in enumerate(row):
        if v > row[best]:
            best = k
    return best


def _tol(dtype):
    """(rtol, atol) for comparing a metric computed in ``dtype`` with a float64 oracle."""
    return (1e-5, 1e-5) if dtype == torch.float32 else (1e-12, 1e-12)


def assert_matches(actual, expected, dtype=torch.float64, exact=False):
    """Same NaN pattern and values within the dtype's tolerance (or exactly)."""
    assert isinstance(actual, torch.Tensor)
    actual = actual.detach().cpu().double().numpy()
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    rtol, atol = (0.0, 0.0) if exact else _tol(dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def _call(name, x, y, **kwargs):
    return METRICS.get(name)(x, y, **kwargs)


# ------------------------------------------------------------------------------------------------
# the registry and the table
# ------------------------------------------------------------------------------------------------


def test_every_registered_metric_is_classified():
    unclassified = [name for name in METRICS.names() if name not in METRIC_TABLE]
    assert not unclassified, f"add these metrics to METRIC_TABLE (and the property sets): {unclassified}"


def test_table_lists_only_registered_metrics():
    stale = [name for name in METRIC_TABLE if name not in METRICS.names()]
    assert not stale, f"METRIC_TABLE lists metrics the registry does not: {stale}"
    for group in (ORDER_ONLY, POSITIVE_SCALE_INVARIANT, PIXEL_PERMUTATION_INVARIANT, SYMMETRIC, FIXED_DTYPE):
        assert set(group) <= set(METRIC_TABLE)
    assert SYMMETRIC <= set(PAIR_METRICS)


@pytest.mark.parametrize("name", ALL_METRICS)
def test_registry_entry_is_the_public_function(name):
    assert METRICS.get(name) is METRIC_TABLE[name][0]
    assert name in METRICS
    assert isinstance(METRICS.help(name), str) and METRICS.help(name).strip()


# ------------------------------------------------------------------------------------------------
# the output contract: a torch.Tensor, one value per item, on the input's device, dtype kept
# ------------------------------------------------------------------------------------------------


def _example_inputs(name, dtype, device, n=3):
    """Fixed, well-defined inputs of the metric's kind; returns (x, y, expected result length)."""
    gen = torch.Generator().manual_seed(7)
    kind, per = METRIC_TABLE[name][1:]
    if kind == MAP:
        x = torch.randn(n, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
        y = torch.rand(n, 5, 6, generator=gen) < 0.4
        y[:, 0, 0], y[:, -1, -1] = True, False
        x[:, 0, 1] = 1.0  # a tie
        x[:, 0, 2] = 1.0
    elif kind == PAIR:
        x = torch.randn(n, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
        y = torch.randn(n, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    else:
        x = torch.randn(n, 4, generator=gen, dtype=torch.float64).to(dtype)
        # every image (row) and every class (column) has a positive label
        y = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])[:n]
    length = x.shape[1] if per == "class" else n
    return x.to(device), y.to(device), length


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_METRICS)
def test_output_contract(name, device, dtype):
    x, y, length = _example_inputs(name, dtype, device)
    out = _call(name, x, y)
    assert isinstance(out, torch.Tensor)
    assert out.device == x.device
    assert out.shape == (length,)
    assert out.dtype == FIXED_DTYPE.get(name, dtype)
    assert not torch.isnan(out).any()  # the example inputs are well defined
    if device != "cpu":  # the same values as on the CPU
        cpu = _call(name, x.cpu(), y.cpu())
        torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", ALL_METRICS)
def test_reads_cpu_tensors_only_through_zero_copy_views(name, monkeypatch):
    # A CPU tensor and its numpy array share memory, so the metrics may use numpy kernels on the CPU;
    # they must never copy a tensor into numpy (nor convert one implicitly) and must return tensors.
    x, y, _ = _example_inputs(name, torch.float32, "cpu")
    extra = {"roc_auc": {"ignore": torch.zeros_like(y)}, "pointing_game": {"tolerance": 3}}.get(name, {})
    expected = _call(name, x, y, **extra)
    original = torch.Tensor.numpy

    def view_only(self, *, force=False):
        if force or self.device.type != "cpu":
            raise AssertionError("a metric copied a tensor to NumPy")
        array = original(self)
        if self.numel() and array.ctypes.data != self.data_ptr():
            raise AssertionError("a metric copied a tensor to NumPy")
        return array

    def refuse(*args, **kwargs):
        raise AssertionError("a metric converted a tensor to NumPy implicitly")

    monkeypatch.setattr(torch.Tensor, "numpy", view_only)
    monkeypatch.setattr(torch.Tensor, "__array__", refuse)
    with pytest.raises(AssertionError, match="NumPy"):
        np.asarray(torch.zeros(1))  # the patch works
    out = _call(name, x, y, **extra)
    monkeypatch.undo()
    assert isinstance(out, torch.Tensor) and out.device == x.device
    torch.testing.assert_close(out, expected, equal_nan=True)


@pytest.mark.parametrize("name", ALL_METRICS)
@given(data=st.data())
@PROPERTY
def test_batch_equals_items_one_at_a_time(name, data):
    x, y = _draw_inputs(data, name, ALL_VALUES if _kind(name) != PAIR else MODERATE)
    whole = _call(name, x, y)
    if METRIC_TABLE[name][2] == "class":
        parts = [_call(name, x[:, j : j + 1], y[:, j : j + 1]) for j in range(x.shape[1])]
    else:
        parts = [_call(name, x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]
    assert_matches(whole, torch.cat(parts).numpy(), x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MAP_METRICS)
def test_map_metric_over_many_internal_chunks(name, dtype):
    """A batch larger than the metrics' working chunk (2**18 pixels on the CPU): 70 maps of 64 x 64 span two."""
    gen = torch.Generator().manual_seed(3)
    maps = torch.randint(0, 6, (70, 64, 64), generator=gen).to(dtype) + torch.rand(70, 1, 1, generator=gen).to(dtype)
    masks = torch.rand(70, 64, 64, generator=gen) < 0.3
    masks[::7] = False  # some empty masks
    oracle = {"roc_auc": sk_roc_auc, "pointing_game": naive_pointing, "relevance_mass": naive_relevance_mass}[name]
    assert_matches(_call(name, maps, masks), oracle(maps, masks), dtype)


@pytest.mark.parametrize("name", ALL_METRICS)
def test_empty_batch(name):
    x, y, _ = _example_inputs(name, torch.float32, "cpu")
    x, y = x[:0], y[:0]
    out = _call(name, x, y)
    if METRIC_TABLE[name][2] == "class":
        assert out.shape == (x.shape[1],) and torch.isnan(out).all()  # no image: no positive anywhere
    else:
        assert out.shape == (0,)


# ------------------------------------------------------------------------------------------------
# invariances shared by several metrics
# ------------------------------------------------------------------------------------------------

INCREASING = {
    "exp": (lambda x: x, torch.exp),
    "3x+2": (lambda x: x, lambda x: 3 * x + 2),
    "cube_of_nonnegative": (lambda x: x - x.min(), lambda x: x**3),
}


@pytest.mark.parametrize("name", sorted(ORDER_ONLY, key=ALL_METRICS.index))
@given(data=st.data())
@PROPERTY
def test_invariant_to_strictly_increasing_transform(name, data):
    x, y = _draw_inputs(data, name, EXACT)
    for transform, (domain, f) in INCREASING.items():
        base = domain(x)
        try:
            assert_matches(_call(name, f(base), y), _call(name, base, y).numpy(), exact=True)
        except AssertionError as error:
            raise AssertionError(f"not invariant to {transform}: {error}") from None


@pytest.mark.parametrize("name", sorted(POSITIVE_SCALE_INVARIANT, key=ALL_METRICS.index))
@given(data=st.data(), scale=st.sampled_from([2.0**-4, 0.1, 1.0, 3.0, 1000.0]),
       other=st.sampled_from([0.25, 7.0]))
@PROPERTY
def test_invariant_to_positive_scaling(name, data, scale, other):
    exact = name in ORDER_ONLY
    x, y = _draw_inputs(data, name, EXACT if exact else MODERATE)
    expected = _call(name, x, y).numpy()
    assert_matches(_call(name, x * scale, y), expected, x.dtype, exact=exact)
    if _kind(name) == PAIR:  # either argument, or both by different factors
        assert_matches(_call(name, x, y * scale), expected, x.dtype)
        assert_matches(_call(name, x * other, y * scale), expected, x.dtype)


@pytest.mark.parametrize("name", sorted(PIXEL_PERMUTATION_INVARIANT, key=ALL_METRICS.index))
@given(data=st.data())
@PROPERTY
def test_invariant_to_the_same_pixel_permutation(name, data):
    x, y = _draw_inputs(data, name, ALL_VALUES if _kind(name) == MAP else MODERATE)
    n, h, w = x.shape
    perm = torch.tensor(data.draw(st.permutations(range(h * w))))
    px, py = x.reshape(n, -1)[:, perm].reshape(n, h, w), y.reshape(n, -1)[:, perm].reshape(n, h, w)
    assert_matches(_call(name, px, py), _call(name, x, y).numpy(), x.dtype, exact=name == "roc_auc")


@pytest.mark.parametrize("name", sorted(SYMMETRIC, key=ALL_METRICS.index))
@given(batch=pair_batches())
@PROPERTY
def test_symmetric(name, batch):
    a, b = batch
    assert_matches(_call(name, b, a), _call(name, a, b).numpy(), a.dtype)


# ------------------------------------------------------------------------------------------------
# roc_auc
# ------------------------------------------------------------------------------------------------


@given(batch=map_batches())
@PROPERTY
def test_roc_auc_equals_sklearn_per_map(batch):
    maps, masks = batch  # ties from the "levels" and "grid" values; masks with one class give NaN
    assert_matches(roc_auc(maps, masks), sk_roc_auc(maps, masks))  # to 1e-12 whatever the input dtype


@given(batch=map_batches(both_classes=True))
@PROPERTY
def test_roc_auc_of_the_inverted_mask_is_one_minus_auc(batch):
    maps, masks = batch
    assert_matches(roc_auc(maps, masks == 0), 1 - roc_auc(maps, masks).numpy())


@given(batch=map_batches(both_classes=True), data=st.data())
@PROPERTY
def test_roc_auc_is_nan_for_a_mask_with_one_class(batch, data):
    maps, masks = batch
    n = maps.shape[0]
    fill = data.draw(st.lists(st.sampled_from([None, 0, 1]), min_size=n, max_size=n))
    masks = masks.clone()
    for i, value in enumerate(fill):
        if value is not None:
            masks[i] = value  # all negative or all positive
    out = roc_auc(maps, masks)
    assert torch.isnan(out).tolist() == [value is not None for value in fill]


@given(batch=map_batches(), data=st.data())
@PROPERTY
def test_roc_auc_ignore_equals_dropping_the_pixels(batch, data):
    maps, masks = batch
    ignore = torch.from_numpy(data.draw(hnp.arrays(np.bool_, tuple(maps.shape))))
    ignore = ignore.to(data.draw(st.sampled_from(MASK_DTYPES)))
    out = roc_auc(maps, masks, ignore=ignore)
    assert_matches(out, sk_roc_auc(maps, masks, ignore))
    for i in range(maps.shape[0]):  # and as apkit's own value on the kept pixels alone
        keep = ignore[i].reshape(-1) == 0
        if keep.any():
            kept_map = maps[i].reshape(-1)[keep].reshape(1, 1, -1)
            kept_mask = masks[i].reshape(-1)[keep].reshape(1, 1, -1)
            assert_matches(out[i : i + 1], roc_auc(kept_map, kept_mask).numpy(), exact=True)
        else:
            assert math.isnan(out[i])


# ------------------------------------------------------------------------------------------------
# pointing_game
# ------------------------------------------------------------------------------------------------


@given(batch=map_batches())
@PROPERTY
def test_pointing_game_equals_naive_first_argmax(batch):
    maps, masks = batch  # ties for the maximum from the "levels" values; empty masks give NaN
    assert_matches(pointing_game(maps, masks), naive_pointing(maps, masks), exact=True)


@given(batch=map_batches(), tolerance=st.integers(0, 6))
@PROPERTY
def test_pointing_game_tolerance_equals_naive_disk(batch, tolerance):
    maps, masks = batch
    out = pointing_game(maps, masks, tolerance=tolerance)
    assert_matches(out, naive_pointing(maps, masks, tolerance), exact=True)
    if tolerance <= 1:  # 0 and 1 are both the strict rule
        assert_matches(out, pointing_game(maps, masks).numpy(), exact=True)


@given(batch=map_batches(), data=st.data())
@PROPERTY
def test_pointing_game_is_nan_for_an_empty_mask(batch, data):
    maps, masks = batch
    n = maps.shape[0]
    empty = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    masks = masks.clone()
    masks.reshape(n, -1)[:, 0] = 1  # not empty ...
    masks[torch.tensor(empty)] = 0  # ... unless chosen
    for tolerance in (0, 3):
        out = pointing_game(maps, masks, tolerance=tolerance)
        assert torch.isnan(out).tolist() == empty
        assert set(out[~torch.isnan(out)].tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------------------------------------
# relevance_mass
# ------------------------------------------------------------------------------------------------


@given(batch=map_batches())
@PROPERTY
def test_relevance_mass_equals_naive_formula(batch):
    maps, masks = batch
    out = relevance_mass(maps, masks)
    assert_matches(out, naive_relevance_mass(maps, masks), maps.dtype)
    defined = out[~torch.isnan(out)]
    assert ((defined >= 0) & (defined <= 1)).all()


@given(batch=map_batches(both_classes=True), data=st.data())
@PROPERTY
def test_relevance_mass_is_nan_where_undefined(batch, data):
    maps, masks = batch
    n = maps.shape[0]
    maps, masks = maps.abs() + 1, masks.clone()  # all relevance positive: defined
    no_relevance = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    empty = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    maps[torch.tensor(no_relevance)] *= -1  # nothing positive (zeros would do as well)
    masks[torch.tensor(empty)] = 0
    out = relevance_mass(maps, masks)
    assert torch.isnan(out).tolist() == [r or e for r, e in zip(no_relevance, empty)]


# ------------------------------------------------------------------------------------------------
# cosine_similarity and normalized_l2
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIR_METRICS)
@given(batch=pair_batches())
@PROPERTY
def test_pair_metric_equals_naive_formula(name, batch):
    a, b = batch
    oracle = {"cosine_similarity": naive_cosine, "normalized_l2": naive_l2}[name]
    out = _call(name, a, b)
    assert_matches(out, oracle(a, b), a.dtype)
    defined = out[~torch.isnan(out)]
    low, high = (-1, 1) if name == "cosine_similarity" else (0, 2)
    assert ((defined >= low) & (defined <= high)).all()
    # flattened (N, D) maps are the same maps
    assert_matches(_call(name, a.flatten(1), b.flatten(1)), out.numpy(), exact=True)


@given(batch=pair_batches())
@PROPERTY
def test_pair_metrics_of_a_map_with_itself(batch):
    a, _ = batch
    zero = (a.flatten(1) == 0).all(1)
    cos, l2 = cosine_similarity(a, a), normalized_l2(a, a)
    assert_matches(cos, np.where(zero.numpy(), np.nan, 1.0), a.dtype)
    assert_matches(l2, np.where(zero.numpy(), np.nan, 0.0), a.dtype)


@given(batch=pair_batches())
@PROPERTY
def test_l2_is_sqrt_of_2_minus_2_cos(batch):
    a, b = batch
    cos, l2 = cosine_similarity(a, b).double(), normalized_l2(a, b).double()
    assert_matches(l2**2, (2 - 2 * cos).numpy(), a.dtype)
    # without the square, cos near 1 amplifies rounding: sqrt(eps) rather than eps
    atol = 3e-3 if a.dtype == torch.float32 else 1e-6
    np.testing.assert_allclose(l2.numpy(), np.sqrt(np.clip(2 - 2 * cos.numpy(), 0, None)), atol=atol, rtol=0)


@pytest.mark.parametrize("name", PAIR_METRICS)
@given(batch=pair_batches(modes=("moderate",)), data=st.data())
@PROPERTY
def test_pair_metric_is_nan_for_an_all_zero_map(name, batch, data):
    a, b = (x.clone() for x in batch)
    n = a.shape[0]
    a.flatten(1)[:, 0], b.flatten(1)[:, 0] = 1, 1  # not all zero ...
    zero_a = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    zero_b = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    a[torch.tensor(zero_a)], b[torch.tensor(zero_b)] = 0, 0  # ... unless chosen
    out = _call(name, a, b)
    assert torch.isnan(out).tolist() == [p or q for p, q in zip(zero_a, zero_b)]


@pytest.mark.parametrize("name", PAIR_METRICS)
@pytest.mark.parametrize("scale", [1e-25, 1e30])
def test_pair_metric_of_tiny_or_huge_float32_maps_is_defined(name, scale):
    # The norms would under- or overflow in float32; the metrics ignore scale, so they must not.
    a = torch.tensor([[[1.0, 2.0], [0.0, 3.0]]]) * scale
    b = torch.tensor([[[2.0, 1.0], [1.0, 3.0]]]) * scale
    expected = _call(name, a / scale, b / scale)
    torch.testing.assert_close(_call(name, a, b), expected)


# ------------------------------------------------------------------------------------------------
# classification metrics
# ------------------------------------------------------------------------------------------------


@given(batch=score_batches())
@PROPERTY
def test_per_image_average_precision_equals_sklearn_per_row(batch):
    scores, labels = batch
    assert_matches(per_image_average_precision(scores, labels), sk_average_precision_rows(scores, labels), scores.dtype)


@given(batch=score_batches(max_images=8))
@PROPERTY
def test_per_class_average_precision_equals_sklearn_per_column(batch):
    scores, labels = batch
    expected = sk_average_precision_rows(scores.t(), labels.t())
    assert_matches(per_class_average_precision(scores, labels), expected, scores.dtype)
    has_positive = (labels != 0).any(0).numpy()
    if has_positive.all():  # and as scikit-learn's average=None call
        y, s = (labels != 0).numpy(), scores.double().numpy()
        expected = average_precision_score(y, s, average=None)
        assert_matches(per_class_average_precision(scores, labels), expected, scores.dtype)


@given(batch=score_batches(modes=EXACT), threshold=st.sampled_from([0.5, 0.0, -1.0, 1.25]),
       zero_division=st.sampled_from([0.0, 1.0]))
# a score equal to the threshold is predicted; an image with neither label nor prediction is zero_division
@example(batch=(torch.tensor([[0.5, 0.25, 1.0], [0.0, 0.25, 0.0]]), torch.tensor([[1, 0, 0], [0, 0, 0]])),
         threshold=0.5, zero_division=1.0)
@PROPERTY
def test_f1_samples_equals_sklearn_samples_f1_per_row(batch, threshold, zero_division):
    scores, labels = batch  # grid values include every threshold: ">=" is exercised
    out = f1_samples(scores, labels, threshold=threshold, zero_division=zero_division)
    y, p = (labels != 0).numpy().astype(int), (scores >= threshold).numpy().astype(int)
    per_row = [f1_score(y[i : i + 1], p[i : i + 1], average="samples", zero_division=zero_division)
               for i in range(y.shape[0])]
    assert_matches(out, per_row, scores.dtype)
    mean = f1_score(y, p, average="samples", zero_division=zero_division)
    assert float(out.double().mean()) == pytest.approx(mean, abs=1e-6)


@given(batch=score_batches(modes=EXACT), data=st.data())
@PROPERTY
def test_top1_accuracy_equals_naive_argmax(batch, data):
    logits, labels = batch  # ties for the maximum from the "levels" values: the first one counts
    n, c = logits.shape
    first = [naive_first_argmax(row) for row in logits.tolist()]
    targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    targets = torch.from_numpy(targets).to(data.draw(st.sampled_from((torch.int64, torch.int32, torch.uint8))))
    assert_matches(top1_accuracy(logits, targets), [float(f == t) for f, t in zip(first, targets.tolist())], exact=True)
    # multi-hot targets: correct when the top class is one of the image's labels
    expected = [float(bool(row[f])) for f, row in zip(first, labels.tolist())]
    assert_matches(top1_accuracy(logits, labels), expected, exact=True)


# ------------------------------------------------------------------------------------------------
# bad input raises ValidationError
# ------------------------------------------------------------------------------------------------


def _maps(*shape, dtype=torch.float32):
    return torch.linspace(-1, 1, math.prod(shape), dtype=dtype).reshape(shape)


def _masks(*shape):
    mask = torch.zeros(shape, dtype=torch.uint8)
    mask.view(-1)[::2] = 1
    return mask


def _with(x, index, value):
    x = x.clone()
    x[index] = value
    return x


BAD_MAP_INPUTS = {
    "shape_mismatch": lambda: ((_maps(2, 3, 4), _masks(2, 3, 5)), {}),
    "batch_mismatch": lambda: ((_maps(2, 3, 4), _masks(3, 3, 4)), {}),
    "mask_value_2": lambda: ((_maps(2, 3, 4), _with(_masks(2, 3, 4), (1, 0, 0), 2)), {}),
    "mask_negative": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4).long() - 1), {}),
    "mask_fraction": lambda: ((_maps(2, 3, 4), _with(_masks(2, 3, 4).float(), (0, 1, 1), 0.5)), {}),
    "mask_nan": lambda: ((_maps(2, 3, 4), _with(_masks(2, 3, 4).float(), (0, 1, 1), math.nan)), {}),
    "integer_maps": lambda: ((torch.ones(2, 3, 4, dtype=torch.int64), _masks(2, 3, 4)), {}),
    "rank2_maps": lambda: ((_maps(3, 4), _masks(3, 4)), {}),
    "rank4_maps": lambda: ((_maps(1, 2, 3, 4), _masks(1, 2, 3, 4)), {}),
    "no_pixels": lambda: ((_maps(2, 0, 4), _masks(2, 0, 4)), {}),
    "nan_map": lambda: ((_with(_maps(2, 3, 4), (1, 2, 0), math.nan), _masks(2, 3, 4)), {}),
    "inf_map": lambda: ((_with(_maps(2, 3, 4, dtype=torch.float64), (0, 0, 0), math.inf), _masks(2, 3, 4)), {}),
    "minus_inf_map": lambda: ((_with(_maps(2, 3, 4), (1, 1, 1), -math.inf), _masks(2, 3, 4)), {}),
    "numpy_maps": lambda: ((np.zeros((2, 3, 4), dtype=np.float32), _masks(2, 3, 4)), {}),
    "list_masks": lambda: ((_maps(1, 1, 2), [[[0, 1]]]), {}),
}
BAD_PAIR_INPUTS = {
    "shape_mismatch": lambda: ((_maps(2, 3, 4), _maps(2, 4, 3)), {}),
    "batch_mismatch": lambda: ((_maps(2, 3, 4), _maps(3, 3, 4)), {}),
    "rank_mismatch": lambda: ((_maps(2, 3, 4), _maps(2, 12)), {}),
    "integer_maps": lambda: ((torch.ones(2, 3, 4, dtype=torch.int64), torch.ones(2, 3, 4, dtype=torch.int64)), {}),
    "rank1_maps": lambda: ((_maps(4), _maps(4)), {}),
    "rank4_maps": lambda: ((_maps(1, 2, 3, 4), _maps(1, 2, 3, 4)), {}),
    "nan_a": lambda: ((_with(_maps(2, 3, 4), (0, 1, 2), math.nan), _maps(2, 3, 4)), {}),
    "inf_b": lambda: ((_maps(2, 3, 4), _with(_maps(2, 3, 4), (1, 0, 0), math.inf)), {}),
    "numpy_b": lambda: ((_maps(2, 3, 4), np.ones((2, 3, 4), dtype=np.float32)), {}),
}
BAD_CLASSIFICATION_INPUTS = {
    "shape_mismatch": lambda: ((_maps(3, 4), _masks(3, 5)), {}),
    "batch_mismatch": lambda: ((_maps(3, 4), _masks(2, 4)), {}),
    "integer_scores": lambda: ((torch.ones(3, 4, dtype=torch.int64), _masks(3, 4)), {}),
    "rank1_scores": lambda: ((_maps(4), _masks(4)), {}),
    "rank3_scores": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {}),
    "nan_scores": lambda: ((_with(_maps(3, 4), (2, 1), math.nan), _masks(3, 4)), {}),
    "inf_scores": lambda: ((_with(_maps(3, 4), (0, 0), math.inf), _masks(3, 4)), {}),
    "numpy_scores": lambda: ((np.zeros((3, 4), dtype=np.float32), _masks(3, 4)), {}),
}
# Label checks the docstrings promise for multi-hot labels ("binary"); top1_accuracy's (N, C) targets
# are only read as "> 0" and its docstring promises no check, so it is left out here.
BAD_LABELS = {
    "labels_value_2": lambda: ((_maps(3, 4), _with(_masks(3, 4), (1, 1), 2)), {}),
    "labels_fraction": lambda: ((_maps(3, 4), _with(_masks(3, 4).float(), (0, 0), 0.5)), {}),
    "labels_nan": lambda: ((_maps(3, 4), _with(_masks(3, 4).float(), (0, 0), math.nan)), {}),
}
BAD_SPECIFIC_INPUTS = {
    "roc_auc": {
        "ignore_shape_mismatch": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {"ignore": _masks(2, 3, 3)}),
        "ignore_value_3": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {"ignore": _masks(2, 3, 4) * 3}),
    },
    "pointing_game": {
        "tolerance_negative": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {"tolerance": -1}),
        "tolerance_float": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {"tolerance": 1.5}),
        "tolerance_bool": lambda: ((_maps(2, 3, 4), _masks(2, 3, 4)), {"tolerance": True}),
    },
    "f1_samples": {
        "threshold_nan": lambda: ((_maps(3, 4), _masks(3, 4)), {"threshold": math.nan}),
        "threshold_str": lambda: ((_maps(3, 4), _masks(3, 4)), {"threshold": "0.5"}),
    },
    "top1_accuracy": {
        "targets_out_of_range": lambda: ((_maps(3, 4), torch.tensor([0, 4, 1])), {}),
        "targets_negative": lambda: ((_maps(3, 4), torch.tensor([0, -1, 1])), {}),
        "targets_float": lambda: ((_maps(3, 4), torch.tensor([0.0, 1.0, 1.0])), {}),
        "targets_bool": lambda: ((_maps(3, 4), torch.tensor([True, False, True])), {}),
        "targets_length": lambda: ((_maps(3, 4), torch.tensor([0, 1])), {}),
        "targets_rank3": lambda: ((_maps(3, 4), torch.zeros(3, 4, 1)), {}),
    },
}


def _bad_cases():
    common = {MAP: BAD_MAP_INPUTS, PAIR: BAD_PAIR_INPUTS, CLASSIFICATION: BAD_CLASSIFICATION_INPUTS}
    for name in ALL_METRICS:
        cases = dict(common[_kind(name)])
        if _kind(name) == CLASSIFICATION and name != "top1_accuracy":
            cases.update(BAD_LABELS)
        cases.update(BAD_SPECIFIC_INPUTS.get(name, {}))
        for case, make in cases.items():
            yield pytest.param(name, make, id=f"{name}-{case}")


@pytest.mark.parametrize("name, make", list(_bad_cases()))
def test_bad_input_raises_validation_error(name, make):
    args, kwargs = make()
    with pytest.raises(ValidationError):
        _call(name, *args, **kwargs)
