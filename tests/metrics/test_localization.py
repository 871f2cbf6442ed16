"""Localization metrics against scikit-learn, naive references and hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_auc_score, roc_curve

from apkit import metrics
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.metrics import localization
from apkit.metrics.localization import (
    class_averaged,
    normalize_maps,
    per_class_mean,
    pointing_game,
    relevance_mass,
    roc_auc,
)


def _sklearn_auc(maps, masks, ignore=None):
    out = []
    for i in range(maps.shape[0]):
        y = masks[i].reshape(-1).numpy().astype(bool)
        s = maps[i].reshape(-1).numpy()
        if ignore is not None:
            keep = ~ignore[i].reshape(-1).numpy().astype(bool)
            y, s = y[keep], s[keep]
        if y.all() or not y.any():
            out.append(math.nan)
            continue
        score = roc_auc_score(y, s)
        fpr, tpr, _ = roc_curve(y, s)  # the paper's call
        assert score == pytest.approx(sk_auc(fpr, tpr), abs=1e-12)
        out.append(score)
    return np.array(out)


def _cases():
    gen = torch.Generator().manual_seed(0)
    n, h, w = 12, 23, 17
    yield "gaussian", torch.randn(n, h, w, generator=gen, dtype=torch.float64)
    yield "relu (heavy ties at 0)", torch.randn(n, h, w, generator=gen, dtype=torch.float64).clamp(min=0)
    yield "4 levels", torch.randint(0, 4, (n, h, w), generator=gen).double()
    yield "float32 rounded", (torch.randn(n, h, w, generator=gen) * 3).round()
    yield "constant", torch.full((n, h, w), 0.25, dtype=torch.float64)
    yield "signed zeros", torch.where(torch.rand(n, h, w, generator=gen) < 0.5, -0.0, 0.0).double()
    yield "large offset", torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 1e-9 + 1e6


@pytest.mark.parametrize("name,maps", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_roc_auc_equals_sklearn(name, maps):
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(maps.shape, generator=gen) < 0.3
    masks[0] = False  # no positive: NaN
    masks[1] = True  # no negative: NaN
    masks[2] = False
    masks[2, 5, 7] = True  # a single positive pixel
    masks[3] = True
    masks[3, 0, 0] = False  # a single negative pixel
    ours = roc_auc(maps, masks).numpy()
    np.testing.assert_allclose(ours, _sklearn_auc(maps, masks), rtol=0, atol=1e-9, equal_nan=True)
    assert np.isnan(ours[:2]).all()


def test_roc_auc_ignore_leaves_pixels_out():
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(6, 9, 11, generator=gen).relu()
    masks = torch.rand(6, 9, 11, generator=gen) < 0.4
    ignore = torch.rand(6, 9, 11, generator=gen) < 0.3
    np.testing.assert_allclose(roc_auc(maps, masks, ignore=ignore).numpy(), _sklearn_auc(maps, masks, ignore),
                               atol=1e-9, equal_nan=True)


def test_roc_auc_hand_computed_and_dtypes():
    maps = torch.tensor([[[0.1, 0.4], [0.35, 0.8]]])
    masks = torch.tensor([[[0, 0], [1, 1]]])
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly.
    assert roc_auc(maps, masks).item() == 0.75
    assert roc_auc(maps, masks.bool()).item() == 0.75
    assert roc_auc(maps, masks.float()).item() == 0.75
    assert roc_auc(maps.half(), masks).item() == 0.75
    # a tie between a positive and a negative counts one half
    assert roc_auc(torch.tensor([[[1.0, 1.0, 0.0]]]), torch.tensor([[[1, 0, 0]]])).item() == 0.75
    assert roc_auc(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4)).shape == (0,)


def test_roc_auc_chunks_agree(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(20, 8, 8, generator=gen).relu()
    masks = torch.rand(20, 8, 8, generator=gen) < 0.5
    whole = roc_auc(maps, masks)
    monkeypatch.setitem(localization._CHUNK_PIXELS, "cpu", 64 * 3)  # 3 maps per chunk
    assert torch.equal(roc_auc(maps, masks), whole)


def _naive_pointing(maps, masks, tolerance=0):
    hits = []
    for m, k in zip(maps, masks):
        r, c = np.where(m.numpy() == m.numpy().max())
        r, c = r[0], c[0]  # the paper's first arg-max, row-major
        if tolerance <= 1:
            hits.append(float(k[r, c]))
        else:
            rows, cols = np.nonzero(k.numpy())
            hits.append(float(((rows - r) ** 2 + (cols - c) ** 2 < tolerance ** 2).any()))
        if not k.any():
            hits[-1] = math.nan
    return np.array(hits)


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3, 7])
def test_pointing_game_equals_naive_reference(tolerance):
    gen = torch.Generator().manual_seed(4)
    maps = torch.randint(0, 5, (40, 13, 10), generator=gen).float()  # many tied maxima
    masks = torch.rand(40, 13, 10, generator=gen) < 0.08
    masks[0] = False
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=tolerance).numpy(),
                                  _naive_pointing(maps, masks, tolerance))


def test_pointing_game_first_argmax_and_tolerance_by_hand():
    maps = torch.tensor([[[0.0, 5.0, 5.0], [5.0, 1.0, 0.0]]])
    first = torch.tensor([[[0, 1, 0], [0, 0, 0]]])
    later = torch.tensor([[[0, 0, 1], [1, 0, 0]]])
    assert pointing_game(maps, first).tolist() == [1.0]  # the first maximum, (0, 1), is on the mask
    assert pointing_game(maps, later).tolist() == [0.0]
    far = torch.zeros(1, 2, 3, dtype=torch.long)
    far[0, 1, 2] = 1  # distance from (0, 1) to (1, 2) is sqrt(2) = 1.41
    assert pointing_game(maps, far, tolerance=1).tolist() == [0.0]
    assert pointing_game(maps, far, tolerance=2).tolist() == [1.0]


def test_relevance_mass_closed_form():
    maps = torch.tensor([[[3.0, -1.0], [1.0, 0.0]], [[-1.0, -2.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    masks = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    out = relevance_mass(maps, masks)
    assert out[0].item() == pytest.approx(3.0 / 4.0)
    assert math.isnan(out[1].item())  # no positive relevance
    assert math.isnan(out[2].item())  # empty mask


def test_per_class_and_class_averaged():
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, math.nan])
    classes = torch.tensor([0, 0, 2, 2, 1])
    per_class = per_class_mean(values, classes, num_classes=4)
    assert per_class[0].item() == 0.5 and per_class[2].item() == 1.0
    assert math.isnan(per_class[1].item()) and math.isnan(per_class[3].item())
    assert class_averaged(values, classes).item() == pytest.approx(0.75)
    with pytest.raises(ValidationError, match="num_classes"):
        per_class_mean(values, classes, num_classes=2)
    with pytest.raises(ValidationError, match="integer"):
        per_class_mean(values, classes.float())


@pytest.mark.parametrize("fn", [roc_auc, pointing_game, relevance_mass])
def test_bad_inputs_raise_apkit_errors(fn):
    maps = torch.rand(2, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValidationError, match="same shape"):
        fn(maps, masks[:, :3])
    with pytest.raises(ValidationError, match="binary"):
        fn(maps, torch.full((2, 4, 4), 2))
    with pytest.raises(ValidationError, match="binary"):
        fn(maps, torch.full((2, 4, 4), 0.5))
    nan_maps = maps.clone()
    nan_maps[1, 2, 2] = math.nan
    with pytest.raises(ValidationError, match=r"NaN.*map\(s\) \[1\]"):
        fn(nan_maps, masks)
    inf_maps = maps.clone()
    inf_maps[0, 0, 0] = math.inf
    with pytest.raises(ValidationError, match="infinite"):
        fn(inf_maps, masks)
    with pytest.raises(ValidationError, match="rank 3"):
        fn(maps[0], masks[0])
    with pytest.raises(ValidationError, match="floating-point"):
        fn(maps.long(), masks)
    with pytest.raises(ValidationError, match="torch.Tensor"):
        fn(maps.numpy(), masks)


def test_device_mismatch_raises():
    maps = torch.rand(2, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool, device="meta")
    for fn in (roc_auc, pointing_game, relevance_mass):
        with pytest.raises(ValidationError, match="same device"):
            fn(maps, masks)


def test_pointing_tolerance_must_be_a_non_negative_int():
    with pytest.raises(ValidationError, match="tolerance"):
        pointing_game(torch.rand(1, 3, 3), torch.ones(1, 3, 3), tolerance=-1)
    with pytest.raises(ValidationError, match="tolerance"):
        pointing_game(torch.rand(1, 3, 3), torch.ones(1, 3, 3), tolerance=1.5)


def test_registry_lists_every_metric():
    names = metrics.METRICS.names()
    for name in ("roc_auc", "pointing_game", "relevance_mass", "cosine_similarity", "normalized_l2",
                 "per_image_average_precision", "per_class_average_precision", "f1_samples", "top1_accuracy"):
        assert name in names and metrics.METRICS.help(name)
    with pytest.raises(UnknownNameError, match="roc_auc"):
        metrics.METRICS.get("auroc")


# --------------------------------------------------------------------------------------------
# the numpy kernels of CPU tensors against the torch kernels (what CUDA runs) and scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.fixture
def torch_kernels(monkeypatch):
    """Run the metrics through their torch code on the CPU, as on a GPU: a function to call."""

    def call(fn, *args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(localization, "_NUMPY_DEVICES", frozenset())
            return fn(*args, **kwargs)

    return call


def _tied_cases(dtype):
    """Maps with heavy ties: few levels, ReLU zeros of both signs, negative values, extremes."""
    gen = torch.Generator().manual_seed(5)
    n, h, w = 9, 19, 21
    yield torch.randint(0, 3, (n, h, w), generator=gen).to(dtype)
    yield torch.randint(-1, 2, (n, h, w), generator=gen).to(dtype)
    relu = torch.randn(n, h, w, generator=gen, dtype=torch.float64).clamp(min=0).to(dtype)
    yield torch.where((relu == 0) & (torch.rand(n, h, w, generator=gen) < 0.5), -0.0, relu)
    yield (torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 4).round().to(dtype)
    info = torch.finfo(dtype)
    extremes = torch.tensor([0.0, -0.0, info.tiny / 4, info.tiny, 1.0, info.max, -info.max, -1.0, -info.tiny,
                             -info.tiny / 4], dtype=dtype)
    yield extremes[torch.randint(0, 6, (n, h, w), generator=gen)]  # >= 0, subnormals included
    yield extremes[torch.randint(0, len(extremes), (n, h, w), generator=gen)]
    yield torch.nn.functional.interpolate(
        torch.randn(n, 1, 4, 5, generator=gen).clamp(min=0), size=(h, w), mode="bilinear")[:, 0].to(dtype)


TIED_CASES = ["3 levels", "3 signed levels", "relu, zeros of both signs", "signed", "extremes >= 0", "extremes",
              "bilinear"]


def _masks_for(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(shape, generator=gen) < 0.35
    masks[0] = False  # no positive: NaN
    masks[1] = True  # no negative: NaN
    masks[2] = False
    masks[2, 3, 4] = True  # a single positive pixel
    return masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", range(len(TIED_CASES)), ids=TIED_CASES)
def test_numpy_roc_auc_equals_torch_and_sklearn(dtype, case, torch_kernels):
    name, maps = TIED_CASES[case], list(_tied_cases(dtype))[case]
    masks = _masks_for(maps.shape, case)
    gen = torch.Generator().manual_seed(10 + case)
    ignore = torch.rand(maps.shape, generator=gen) < 0.2
    for kwargs in ({}, {"ignore": ignore}):
        ours = roc_auc(maps, masks, **kwargs)
        assert ours.dtype == torch.float64 and ours.device == maps.device
        reference = torch_kernels(roc_auc, maps, masks, **kwargs)
        assert torch.equal(torch.isnan(ours), torch.isnan(reference))
        np.testing.assert_array_equal(ours.numpy(), reference.numpy(), err_msg=name)  # both count exactly
        with np.errstate(invalid="ignore", over="ignore"):  # scikit-learn's curve overflows at +-max
            expected = _sklearn_auc(maps, masks, kwargs.get("ignore"))
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12, equal_nan=True, err_msg=name)


def test_numpy_roc_auc_non_contiguous_inputs_and_other_dtypes(torch_kernels):
    gen = torch.Generator().manual_seed(6)
    maps = (torch.randn(7, 15, 13, generator=gen) * 2).round().clamp(min=0)
    masks = torch.rand(7, 15, 13, generator=gen) < 0.4
    ignore = torch.rand(7, 15, 13, generator=gen) < 0.1
    t_maps, t_masks, t_ignore = maps.transpose(1, 2), masks.transpose(1, 2), ignore.transpose(1, 2)
    assert not t_maps.is_contiguous()
    expected = _sklearn_auc(t_maps.contiguous(), t_masks.contiguous(), t_ignore.contiguous())
    for m, k, i in ((t_maps, t_masks, t_ignore), (maps[:, ::2], masks[:, ::2], ignore[:, ::2]),
                    (maps[..., ::2], masks[..., ::2], ignore[..., ::2]),  # rows that reshape to a strided view
                    (t_maps, t_masks.to(torch.uint8), t_ignore.float()),  # 0/1 masks of other dtypes
                    (t_maps.half(), t_masks, t_ignore), (t_maps.bfloat16(), t_masks, t_ignore)):
        np.testing.assert_array_equal(roc_auc(m, k, ignore=i).numpy(),
                                      torch_kernels(roc_auc, m, k, ignore=i).numpy())
    np.testing.assert_allclose(roc_auc(t_maps, t_masks, ignore=t_ignore).numpy(), expected, atol=1e-12,
                               equal_nan=True)
    grad = maps.clone().requires_grad_()
    np.testing.assert_array_equal(roc_auc(grad, masks).numpy(), roc_auc(maps, masks).numpy())


def test_numpy_roc_auc_chunk_boundary(monkeypatch, torch_kernels):
    gen = torch.Generator().manual_seed(7)
    maps = torch.randint(0, 6, (11, 8, 8), generator=gen).float()
    masks = torch.rand(11, 8, 8, generator=gen) < 0.5
    whole = roc_auc(maps, masks)
    monkeypatch.setitem(localization._CHUNK_PIXELS, "cpu", 64 * 4)  # chunks of 4, 4, 3 maps
    np.testing.assert_array_equal(roc_auc(maps, masks).numpy(), whole.numpy())
    np.testing.assert_array_equal(torch_kernels(roc_auc, maps, masks).numpy(), whole.numpy())
    nan_maps = maps.clone()
    nan_maps[9, 1, 1] = math.nan  # in the third chunk: the index is the map's, not the chunk's
    with pytest.raises(ValidationError, match=r"map\(s\) \[9\]"):
        roc_auc(nan_maps, masks)


def test_numpy_roc_auc_raises_on_nan_in_ignored_pixels():
    maps = torch.rand(2, 4, 4)
    maps[1, 0, 0] = math.nan
    ignore = torch.zeros(2, 4, 4, dtype=torch.bool)
    ignore[1, 0, 0] = True
    with pytest.raises(ValidationError, match=r"NaN.*map\(s\) \[1\]"):
        roc_auc(maps, torch.rand(2, 4, 4) < 0.5, ignore=ignore)


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_numpy_pointing_game_equals_torch(tolerance, torch_kernels):
    gen = torch.Generator().manual_seed(8)
    maps = torch.randint(0, 4, (30, 9, 12), generator=gen).double()  # many tied maxima
    masks = torch.rand(30, 9, 12, generator=gen) < 0.1
    masks[0] = False
    for m, k in ((maps, masks), (maps.float(), masks.float()), (maps.half(), masks),
                 (maps.transpose(1, 2), masks.transpose(1, 2))):
        ours = pointing_game(m, k, tolerance=tolerance)
        reference = torch_kernels(pointing_game, m, k, tolerance=tolerance)
        assert ours.dtype == reference.dtype
        np.testing.assert_array_equal(ours.numpy(), reference.numpy())
        np.testing.assert_array_equal(ours.numpy(), _naive_pointing(m.contiguous().double(), k.contiguous(),
                                                                    tolerance))
    for bad in (math.nan, math.inf, -math.inf):
        broken = maps.clone()
        broken[3, 2, 2] = bad
        with pytest.raises(ValidationError, match=r"map\(s\) \[3\]"):
            pointing_game(broken, masks)


def test_numpy_normalize_maps_equals_torch(torch_kernels):
    gen = torch.Generator().manual_seed(9)
    for maps in (torch.randn(5, 7, 6, generator=gen).relu(), torch.randn(5, 7, 6, generator=gen).double(),
                 torch.randn(5, 6, 7, generator=gen).transpose(1, 2), torch.full((2, 3, 3), 4.0)):
        ours = normalize_maps(maps)
        reference = torch_kernels(normalize_maps, maps)
        assert ours.dtype == reference.dtype and ours.shape == reference.shape
        assert torch.equal(ours, reference)
    grad = torch.rand(2, 3, 3, requires_grad=True)
    assert normalize_maps(grad).requires_grad  # the torch path keeps the graph
    assert normalize_maps(torch.zeros(0, 3, 3)).shape == (0, 3, 3)
