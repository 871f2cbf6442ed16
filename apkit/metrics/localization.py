"""Localization metrics: how well attribution maps agree with ground-truth object masks.

Every function takes a batch of maps ``(N, H, W)`` and binary masks of the same shape (bool or
0/1 values), and returns one value per map, ``(N,)``, on the maps' device, NaN where the value is
undefined.  Averaging over maps, per class or class-averaged, is a separate step
(:func:`per_class_mean`, :func:`class_averaged`, or ``torch.nanmean``).

* :func:`roc_auc` -- the area under the ROC curve of the map's pixels as scores for the mask's
  pixels, exactly as scikit-learn's ``roc_curve`` + ``auc`` (the paper's metric), tied scores
  included;
* :func:`pointing_game` -- does the map's maximum fall on the mask (the paper's strict rule, or
  within a pixel tolerance as in TorchRay);
* :func:`relevance_mass` -- the share of the map's positive relevance that falls inside the mask
  (Arras et al., "relevance mass accuracy").
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from apkit.core.errors import ValidationError
from apkit.core.validation import check_int, check_same_shape, check_tensor

__all__ = [
    "class_averaged",
    "normalize_maps",
    "per_class_mean",
    "pointing_game",
    "relevance_mass",
    "roc_auc",
]

# Maps are processed in chunks of about this many pixels, which bounds the working memory (the torch
# AUC needs about 60 bytes per pixel of a chunk; the numpy AUC about 20 bytes per pixel of one map);
# on the CPU small chunks stay close to the cache.
_CHUNK_PIXELS = {"cpu": 1 << 18}
_CHUNK_PIXELS_DEFAULT = 1 << 24

# Devices whose tensors go through the numpy kernels: a CPU tensor and its numpy array share memory,
# so they cost no copy, and np.sort of one map's 32-bit keys is faster than torch's CPU sort of a
# chunk's 64-bit keys (1.9x on a 2-core AMD EPYC, 13x measured elsewhere), np.argmax about 8x faster
# than torch's, and numpy's min-max normalisation about 4x.  Every other device keeps the torch code,
# which the numpy kernels equal exactly (tests/test_metrics_localization.py).
_NUMPY_DEVICES = frozenset({"cpu"})


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _binary_mask(mask: object, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Check ``mask`` is binary (bool or 0/1 values) with the shape and device of ``like``."""
    mask = check_tensor(mask, name)
    check_same_shape(like, mask, like_name, name)
    if mask.dtype == torch.bool or mask.numel() == 0:
        return mask
    if mask.is_floating_point() or mask.is_complex():
        binary = bool(((mask == 0) | (mask == 1)).all())
    else:
        low, high = torch.aminmax(mask)
        binary = int(low) >= 0 and int(high) <= 1
    if not binary:
        raise ValidationError(
            f"{name} must be binary (bool or 0/1 values), got other values; for a segmentation mask "
            "with class ids use (mask == class_id + 1), as the localization protocol does"
        )
    return mask


def _check_maps(maps: object, name: str = "maps") -> torch.Tensor:
    maps = check_tensor(maps, name, ndim=3, floating=True)
    if maps.shape[1] * maps.shape[2] == 0:
        raise ValidationError(f"{name} must have at least one pixel per map, got shape {tuple(maps.shape)}")
    return maps


def _check_finite_rows(rows: torch.Tensor, name: str, offset: int = 0) -> None:
    """Raise if a row holds NaN or inf (both propagate to the row's minimum or maximum)."""
    low, high = rows.amin(dim=1), rows.amax(dim=1)  # cheaper than isfinite(rows).all()
    bad = ~(torch.isfinite(low) & torch.isfinite(high))
    if bool(bad.any()):
        where = (bad.nonzero().squeeze(1)[:5] + offset).tolist()
        raise ValidationError(
            f"{name} must be free of NaN and infinite values, got non-finite entries in map(s) {where}; "
            "drop those maps first (the localization protocol skips them)"
        )


def _chunk_rows(count: int, pixels: int, device: torch.device) -> int:
    budget = _CHUNK_PIXELS.get(device.type, _CHUNK_PIXELS_DEFAULT)
    return max(1, min(count, budget // pixels))


def _numpy_kernels(tensor: torch.Tensor) -> bool:
    return tensor.device.type in _NUMPY_DEVICES


def _numpy_values(rows: torch.Tensor) -> np.ndarray:
    """The float32 or float64 numpy array of CPU ``rows`` (a view where the dtype allows)."""
    rows = rows.detach()
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # half and bfloat16 are exact in float32, ties and order included
    return np.ascontiguousarray(rows.numpy())  # a copy only for strided rows (of one chunk)


def _numpy_bool(rows: torch.Tensor) -> np.ndarray:
    """The bool numpy array of the binary CPU ``rows`` (a view of a bool tensor)."""
    rows = rows.detach()
    return (rows if rows.dtype == torch.bool else rows != 0).numpy()


# --------------------------------------------------------------------------------------------
# ROC-AUC
# --------------------------------------------------------------------------------------------


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """The paper's min-max normalisation of each map: ``(H - min) / (max - min + 1e-5)``.

    The arithmetic is done in the maps' dtype, as the paper's numpy script does it, so that the
    ties it creates are the paper's too.  Float32 and float64 CPU maps that need no gradient are
    computed with numpy (the same operations, the same values, about 4x faster than torch's).

    Examples
    --------
    >>> normalize_maps(torch.tensor([[[1.0, 3.0]]]))
    tensor([[[0.0000, 1.0000]]])
    """
    numpy_ok = maps.dtype in (torch.float32, torch.float64) and not maps.requires_grad
    if numpy_ok and maps.dim() == 3 and maps.numel() and _numpy_kernels(maps):
        values = maps.numpy()
        low = values.min(axis=(1, 2), keepdims=True)
        high = values.max(axis=(1, 2), keepdims=True)
        out = np.subtract(values, low)
        out /= high - low + values.dtype.type(1e-5)
        return torch.from_numpy(out)
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, 1, 1)
    high = flat.amax(1).view(-1, 1, 1)
    return (maps - low) / (high - low + 1e-5)


def roc_auc(maps: torch.Tensor, masks: torch.Tensor, *, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Area under the ROC curve of each map's pixels as scores for its mask's pixels.

    The value equals scikit-learn's ``auc(*roc_curve(mask.ravel(), map.ravel())[:2])``, which the
    paper uses, tied scores included: it is the Mann-Whitney statistic with mid-ranks for ties,
    ``(#{pos > neg} + 0.5 #{pos == neg}) / (#pos * #neg)``, here counted exactly in integers.

    Parameters
    ----------
    maps : torch.Tensor
        ``(N, H, W)`` floating-point attribution maps, free of NaN and inf.
    masks : torch.Tensor
        ``(N, H, W)`` binary masks (bool or 0/1) on the same device: the positive pixels.
    ignore : torch.Tensor, optional
        ``(N, H, W)`` binary: pixels to leave out of both classes (e.g. void pixels).

    Returns
    -------
    torch.Tensor
        ``(N,)`` float64, NaN where a mask has no positive or no negative pixel.

    Notes
    -----
    On the CPU the tensors are read as zero-copy numpy arrays and each map is sorted once with
    ``np.sort``: a float32 map of values >= 0 (min-max normalised maps are) as the 32-bit
    keys ``2 * bits + class``, ordered by (value, class), so the sort costs no more than sorting
    the values; the negatives below a positive are then its position minus the positives before
    it, and a tie group shared by both classes is where a key ``2b`` is followed by ``2b + 1``.
    Other maps (negative values, float64) sort their positive and negative pixels apart and count,
    by binary search, the negatives below and tied with each positive.  The working memory is a
    few copies of one map.

    On other devices (CUDA), the pixels of all maps of a chunk are sorted in one torch call, as
    integer keys ordered by (map, value, class); a tie group is a run of equal values in sorted
    order, delimited with cumulative maxima and minima, so no Python loop runs per map.  Chunks of
    maps bound the memory.  Both paths count in integers, so they give the same values.

    Examples
    --------
    >>> maps = torch.tensor([[[0.1, 0.4], [0.35, 0.8]]])
    >>> masks = torch.tensor([[[0, 0], [1, 1]]])
    >>> roc_auc(maps, masks)
    tensor([0.7500], dtype=torch.float64)
    >>> roc_auc(torch.zeros(1, 2, 2), masks)  # a constant map scores 0.5
    tensor([0.5000], dtype=torch.float64)
    """
    maps = _check_maps(maps)
    masks = _binary_mask(masks, "masks", maps, "maps")
    if ignore is not None:
        ignore = _binary_mask(ignore, "ignore", maps, "maps")
    count, pixels = maps.shape[0], maps.shape[1] * maps.shape[2]
    out = torch.empty(count, dtype=torch.float64, device=maps.device)
    kernel = _auc_rows_numpy if _numpy_kernels(maps) else _auc_rows
    rows = _chunk_rows(count, pixels, maps.device)
    for start in range(0, count, rows):
        stop = min(count, start + rows)
        # Reshaped per chunk: a non-contiguous input is copied one chunk at a time, not whole.
        chunk = maps[start:stop].reshape(-1, pixels)
        _check_finite_rows(chunk, "maps", start)
        skip = None if ignore is None else ignore[start:stop].reshape(-1, pixels)
        out[start:stop] = kernel(chunk, masks[start:stop].reshape(-1, pixels), skip)
    return out


def _auc_rows_numpy(x: torch.Tensor, positive: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """:func:`_auc_rows` for CPU tensors, with numpy: the same values."""
    values = _numpy_values(x)
    pos = _numpy_bool(positive)
    kept = None if skip is None else ~_numpy_bool(skip)
    key = np.empty(values.shape[1], dtype=np.uint32)
    out = np.empty(len(values))
    # One map at a time: np.sort of one map's 32-bit keys is what makes this fast; numpy has no
    # segmented sort, and a (map, value, class) key would need a 64-bit sort, twice as slow.
    for i in range(len(values)):
        row, row_pos = values[i], pos[i]
        if kept is not None:
            row, row_pos = row[kept[i]], row_pos[kept[i]]
        auc = _auc_row_packed(row, row_pos, key) if values.dtype == np.float32 else None
        out[i] = _auc_row_search(row, row_pos) if auc is None else auc
    return torch.from_numpy(out)


# The class bit of a packed key is bit 0: the first byte of a uint32 on a little-endian machine.
_LOW_BYTE = 0 if sys.byteorder == "little" else 3


def _auc_row_packed(values: np.ndarray, positive: np.ndarray, key: np.ndarray) -> float | None:
    """ROC-AUC of one float32 map of values >= 0 with one 32-bit sort; None for other maps.

    The bits of a float32 >= 0 are ordered as its value and below 2**31, so ``2 * bits + class``
    fits a uint32 ordered by (value, class): one np.sort of those keys, as fast as sorting the
    values alone, gives the classes in value order with each tie group's negatives first.
    """
    if values.size == 0 or not values.min() >= 0:  # negative values: a wider key (the search path)
        return None
    key = key[: values.size]
    np.bitwise_and(values.view(np.uint32), 0x7FFFFFFF, out=key)  # -0.0 becomes 0.0
    key <<= 1
    key |= positive
    key.sort()
    where = np.flatnonzero((key.view(np.uint8)[_LOW_BYTE::4] & 1).view(np.bool_))  # the positives, in order
    p, n = where.size, key.size - where.size
    if p == 0 or n == 0:
        return math.nan
    # Negatives at or below each positive = its position - the positives before it.
    at_or_below = int(where.sum()) - p * (p - 1) // 2
    # A tie group holding both classes: the one place where a negative's key 2b is followed by 2b + 1.
    step = np.flatnonzero(np.diff(key) == 1) + 1
    step = step[(key[step] & 1) == 1]
    first = np.searchsorted(key, key[step] - 1, "left")  # the group's first negative
    last = np.searchsorted(key, key[step], "right")  # one past its last positive
    tied = int(((step - first) * (last - step)).sum())  # sum over groups of negatives x positives
    # Twice the Mann-Whitney count: 2 x (negatives at or below) - (negatives tied), over the positives.
    return float(2 * at_or_below - tied) / float(2 * p * n)


def _auc_row_search(values: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of any one map: its sorted positives searched among its sorted negatives."""
    pos, neg = values[positive], values[~positive]  # copies, sorted in place
    p, n = pos.size, neg.size
    if p == 0 or n == 0:
        return math.nan
    pos.sort()
    neg.sort()
    below = np.searchsorted(neg, pos, "left")  # negatives strictly below each positive
    tied = neg[np.minimum(below, n - 1)] == pos  # positives equal to some negative (-0.0 == 0.0)
    ties = int((np.searchsorted(neg, pos[tied], "right") - below[tied]).sum())
    return float(2 * int(below.sum()) + ties) / float(2 * p * n)


def _auc_rows(x: torch.Tensor, positive: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """ROC-AUC of each row of ``x`` (R, P) against the binary rows of ``positive``."""
    # Each pixel's class: 0 negative, 1 positive, 2 left out.
    label = (positive != 0).to(torch.int64)
    if skip is not None:
        label.masked_fill_(skip != 0, 2)
    if x.dtype != torch.float64:
        # One sort of integer keys (row, value, class): faster than sorting floats with indices, and
        # the classes come out in sorted order without a gather.
        rows, pixels = x.shape
        key = _float32_order(x.float())
        key <<= 2
        key |= label
        key |= (torch.arange(rows, device=x.device) << 34).unsqueeze(1)
        key = torch.sort(key.view(-1)).values.view(rows, pixels)
        label = key & 3
        values = key >> 2  # the row bits are equal within a row: they do not change the tie groups
    else:  # 64-bit values leave no room for a class bit: sort the floats, gather the classes
        values, order = torch.sort(x, dim=1)
        label = label.gather(1, order)
    count = torch.int32 if x.shape[1] < 2**30 else torch.int64  # counts within a row; int32 is faster
    pos, neg = (label == 1).to(count), (label == 0).to(count)

    # Tie groups: runs of equal values in sorted order.
    new_tie = torch.ones_like(values, dtype=torch.bool)
    new_tie[:, 1:] = values[:, 1:] != values[:, :-1]
    last_tie = torch.ones_like(new_tie)
    last_tie[:, :-1] = new_tie[:, 1:]
    seen = neg.cumsum(1, dtype=count)  # negatives up to and including each pixel
    before = seen - neg
    tie_start = torch.cummax(before * new_tie, 1).values  # negatives below the pixel's tie group
    tie_end = torch.cummin(seen.masked_fill(~last_tie, torch.iinfo(count).max).flip(1), 1).values.flip(1)
    # Twice the Mann-Whitney count, so that ties (worth one half) stay integers: for a positive
    # pixel, 2 * (negatives below its tie group) + (negatives in its tie group).
    twice = ((tie_start + tie_end) * pos).sum(1, dtype=torch.int64)
    n_pos, n_neg = pos.sum(1, dtype=torch.int64), seen[:, -1].long()
    auc = twice.double() / (2 * n_pos * n_neg).double()
    return auc.masked_fill_((n_pos == 0) | (n_neg == 0), math.nan)


def _float32_order(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in [0, 2**32) ordered as the float32 ``values``; -0.0 and 0.0 share a key."""
    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into 0.0
    # Floats of one sign are ordered as their bit patterns; the negative ones in reverse.
    bits ^= (bits >> 31) & 0x7FFFFFFF
    return bits + (1 << 31)


# --------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------


def _disk_offsets(tolerance: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets (dy, dx) with dy**2 + dx**2 < tolerance**2 (TorchRay's acceptance region)."""
    span = torch.arange(-tolerance, tolerance + 1, device=device)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    inside = dy * dy + dx * dx < tolerance * tolerance
    return dy[inside], dx[inside]


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Pointing game: 1 where the map's maximum falls on the mask, 0 where it does not.

    Parameters
    ----------
    maps : torch.Tensor
        ``(N, H, W)`` floating-point maps, free of NaN and inf.
    masks : torch.Tensor
        ``(N, H, W)`` binary masks (bool or 0/1) on the same device.
    tolerance : int
        0 (default): the paper's strict rule -- a hit when the mask holds the arg-max pixel, the
        first one in row-major order when several pixels tie for the maximum.  ``t >= 1``:
        TorchRay's rule -- a hit when some mask pixel lies at a Euclidean distance ``< t`` pixels
        from that arg-max (so 1 is the strict rule again; TorchRay's default is 15).

    Returns
    -------
    torch.Tensor
        ``(N,)`` float: 1.0 (hit), 0.0 (miss), NaN where a mask is empty.

    Notes
    -----
    On the CPU the arg-max and the finiteness check run on zero-copy numpy views of each chunk of
    maps (numpy's arg-max, the first maximum too, is several times faster than torch's);
    elsewhere in torch.  The hits are gathered from the masks in torch on both paths.

    Examples
    --------
    >>> maps = torch.tensor([[[0.0, 0.2, 0.9], [0.1, 0.3, 0.0]]]).repeat(2, 1, 1)
    >>> masks = torch.tensor([[[0, 0, 0], [1, 0, 0]]]).repeat(2, 1, 1)
    >>> pointing_game(maps, masks)
    tensor([0., 0.])
    >>> pointing_game(maps, masks, tolerance=3)  # (1, 0) is 2.24 pixels from the max at (0, 2)
    tensor([1., 1.])
    """
    maps = _check_maps(maps)
    masks = _binary_mask(masks, "masks", maps, "maps")
    check_int(tolerance, "tolerance", minimum=0)
    count, height, width = maps.shape
    dtype = maps.dtype if maps.dtype in (torch.float32, torch.float64) else torch.float32
    out = torch.empty(count, dtype=dtype, device=maps.device)
    if count == 0:
        return out
    dy, dx = _disk_offsets(tolerance, maps.device) if tolerance > 1 else (None, None)
    peaks = _first_peaks_numpy if _numpy_kernels(maps) else _first_peaks
    rows = _chunk_rows(count, height * width, maps.device)
    for start in range(0, count, rows):
        stop = min(count, start + rows)
        peak = peaks(maps[start:stop].reshape(-1, height * width), start)
        mask = masks[start:stop].reshape(-1, height * width)
        if dy is None:
            hit = mask.gather(1, peak).squeeze(1) != 0
        else:
            r = peak // width + dy
            c = peak % width + dx
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            where = r.clamp(0, height - 1) * width + c.clamp(0, width - 1)
            hit = ((mask.gather(1, where) != 0) & inside).any(1)
        empty = ~(mask if mask.dtype == torch.bool else mask != 0).any(1)
        out[start:stop] = hit.to(dtype).masked_fill_(empty, math.nan)
    return out


def _first_peaks(rows: torch.Tensor, offset: int) -> torch.Tensor:
    """``(R, 1)`` index of each row's first maximum (row-major); raises on a non-finite row."""
    _check_finite_rows(rows, "maps", offset)
    return rows.argmax(dim=1, keepdim=True)


def _first_peaks_numpy(rows: torch.Tensor, offset: int) -> torch.Tensor:
    """:func:`_first_peaks` for CPU tensors, with numpy's arg-max (the first maximum too)."""
    values = _numpy_values(rows)
    peak = values.argmax(axis=1)  # a NaN is its row's arg-max: found by the check below
    high = values[np.arange(len(values)), peak]
    if not (np.isfinite(high).all() and np.isfinite(values.min(axis=1)).all()):
        _check_finite_rows(rows, "maps", offset)  # raises, with the usual message
    return torch.from_numpy(peak).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# relevance mass
# --------------------------------------------------------------------------------------------


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive relevance that lies inside the mask (Arras et al., 2022).

    ``sum(relu(map) * mask) / sum(relu(map))``: 1 when all positive relevance is on the object.

    Parameters
    ----------
    maps : torch.Tensor
        ``(N, H, W)`` floating-point maps, free of NaN and inf.
    masks : torch.Tensor
        ``(N, H, W)`` binary masks (bool or 0/1) on the same device.

    Returns
    -------
    torch.Tensor
        ``(N,)``, NaN where a map has no positive value or a mask is empty.

    Examples
    --------
    >>> maps = torch.tensor([[[3.0, -1.0], [1.0, 0.0]]])
    >>> masks = torch.tensor([[[1, 1], [0, 0]]])
    >>> relevance_mass(maps, masks)
    tensor([0.7500])
    """
    maps = _check_maps(maps)
    masks = _binary_mask(masks, "masks", maps, "maps")
    dtype = torch.promote_types(maps.dtype, torch.float32)
    count, pixels = maps.shape[0], maps.shape[1] * maps.shape[2]
    flat = maps.reshape(count, pixels)
    if count:
        _check_finite_rows(flat, "maps")
    relevance = flat.to(dtype).clamp(min=0)
    inside = masks.reshape(count, pixels).to(dtype)
    total = relevance.sum(1)
    share = (relevance * inside).sum(1) / total
    undefined = (total == 0) | (inside.sum(1) == 0)
    return share.masked_fill_(undefined, math.nan)


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------


def per_class_mean(values: torch.Tensor, classes: torch.Tensor, *, num_classes: int | None = None) -> torch.Tensor:
    """Mean of ``values`` per class, ignoring NaN; NaN for a class without any value.

    Parameters
    ----------
    values : torch.Tensor
        ``(N,)`` per-pair values, e.g. pointing-game hits or AUCs.
    classes : torch.Tensor
        ``(N,)`` integer class of each pair.
    num_classes : int, optional
        Length of the result; default ``classes.max() + 1``.

    Returns
    -------
    torch.Tensor
        ``(num_classes,)`` float.

    Examples
    --------
    >>> per_class_mean(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 2, 2]))
    tensor([0.5000,    nan, 1.0000])
    """
    values = check_tensor(values, "values", ndim=1)
    classes = check_tensor(classes, "classes", ndim=1)
    check_same_shape(values, classes, "values", "classes")
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise ValidationError(f"classes must be an integer tensor, got {classes.dtype}")
    if classes.numel() and int(classes.min()) < 0:
        raise ValidationError("classes must be >= 0, got a negative class index")
    needed = int(classes.max()) + 1 if classes.numel() else 0
    if num_classes is None:
        num_classes = needed
    check_int(num_classes, "num_classes", minimum=needed)
    dtype = torch.promote_types(values.dtype, torch.float32)
    valid = ~torch.isnan(values.to(dtype))
    classes = classes.long()
    sums = torch.zeros(num_classes, dtype=dtype, device=values.device).index_add_(
        0, classes[valid], values.to(dtype)[valid]
    )
    counts = torch.zeros(num_classes, dtype=dtype, device=values.device).index_add_(
        0, classes[valid], torch.ones_like(sums[:1]).expand(int(valid.sum()))
    )
    return sums / counts  # 0 / 0 = NaN for classes without values


def class_averaged(values: torch.Tensor, classes: torch.Tensor, *, num_classes: int | None = None) -> torch.Tensor:
    """Class-averaged mean: the mean over classes (those with values) of the per-class means.

    TorchRay's pointing-game accuracy is this aggregate of the hits; the paper's point accuracy
    is the plain mean over pairs, ``torch.nanmean(values)``.

    Examples
    --------
    >>> class_averaged(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 2, 2]))
    tensor(0.7500)
    """
    return torch.nanmean(per_class_mean(values, classes, num_classes=num_classes))
