"""The embedded synthetic-shapes dataset: determinism, exact masks, colour independence, splits."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from matplotlib.path import Path as Polygon
from scipy.stats import kruskal
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.data import SyntheticShapes, generate_shapes
from apkit.data import synthetic as syn


@pytest.fixture(scope="module")
def val300():
    return generate_shapes(range(300), split="val", seed=0)


# ------------------------------------------------------------------------------------ contract, determinism
def test_contract_and_normalisation():
    data = SyntheticShapes("train", num_samples=5)
    assert data.classes == syn.CLASSES and len(data.classes) == data.num_classes == 8
    assert data.task == "multilabel" and data.image_size == 64 and len(data) == 5
    assert len(data.mean) == len(data.std) == 3
    assert len(SyntheticShapes("train")) == 4000 and len(SyntheticShapes("seg")) == 500
    image, label, mask = data[3]
    raw, raw_label, raw_mask = data.raw(3)
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert label.dtype == torch.float32 and label.shape == (8,)
    assert mask.dtype == torch.uint8 and mask.shape == (64, 64)
    expected = (raw.double() / 255 - torch.tensor(data.mean).view(3, 1, 1).double()) / torch.tensor(
        data.std).view(3, 1, 1).double()
    assert torch.allclose(image.double(), expected, atol=1e-6)
    assert torch.equal(label, raw_label) and torch.equal(mask, raw_mask)
    assert torch.equal(data[-2][0], data[3][0])
    images, labels, masks = data.tensors()
    assert torch.equal(images[3], image) and torch.equal(labels[3], label) and torch.equal(masks[3], mask)
    uncached = SyntheticShapes("train", num_samples=5, cache=False).tensors()
    assert all(torch.equal(a, b) for a, b in zip(uncached, (images, labels, masks)))


def test_stored_mean_std_match_the_generator():
    # Each image's background colour is random, so a 1,000-image mean has a standard error of ~0.006.
    images = generate_shapes(range(1000), split="train", seed=1)[0].float() / 255
    assert torch.allclose(images.mean((0, 2, 3)), torch.tensor(syn.MEAN), atol=0.025)
    assert torch.allclose(images.std((0, 2, 3)), torch.tensor(syn.STD), atol=0.025)


def test_items_depend_only_on_seed_split_index():
    lone = generate_shapes([300], split="train", seed=3)
    # The same index rendered in a batch that spans cache chunks, in another dataset size, uncached.
    batch = generate_shapes(range(250, 310), split="train", seed=3)
    big = SyntheticShapes("train", num_samples=400, seed=3)
    small = SyntheticShapes("train", num_samples=301, seed=3, cache=False)
    for got in (tuple(t[50] for t in batch), big.raw(300), small.raw(300)):
        for a, b in zip(got, lone):
            assert torch.equal(a, b[0])
    assert not torch.equal(big.raw(299)[0], big.raw(300)[0])
    assert not torch.equal(SyntheticShapes("train", seed=4).raw(300)[0], big.raw(300)[0])


def test_splits_are_disjoint():
    def digests(split, n):
        images = generate_shapes(range(n), split=split)[0]
        return {hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in images}

    train, val, seg = digests("train", 600), digests("val", 300), digests("seg", 300)
    assert len(train) == 600 and len(val) == 300 and len(seg) == 300
    assert not (train & val) and not (train & seg) and not (val & seg)


# -------------------------------------------------------------------------------------- labels and masks
def test_labels_are_the_visible_classes(val300):
    _, labels, masks = val300
    assert set(torch.unique(masks).tolist()) <= set(range(9))
    present = torch.stack([torch.bincount(m.flatten().long(), minlength=9)[1:] > 0 for m in masks]).float()
    assert torch.equal(labels, present)
    counts = labels.sum(1)
    assert counts.min() >= 1 and counts.max() <= 3
    assert {1, 2, 3} <= set(counts.long().tolist())  # one to three objects per image
    assert (labels.mean(0) > 0.15).all()  # every class occurs
    assert (masks == 0).float().mean() > 0.5  # mostly background


def _scene(objects, size=64):
    """Render hand-placed objects (class, cx, cy, radius, theta, rgb) on a flat grey background."""
    obj = np.zeros((syn._MAX_OBJECTS, 10))
    for j, (kind, cx, cy, radius, theta, rgb) in enumerate(objects):
        obj[j] = [1, kind, cx, cy, radius, math.cos(theta), math.sin(theta), *rgb]
    params = {"bg_base": np.full(3, 0.5), "bg_dir": np.array([1.0, 0.0]), "bg_slope": np.zeros(3),
              "bg_coarse": np.zeros((3, syn._GRID, syn._GRID)), "blobs": np.zeros((syn._MAX_BLOBS, 8)),
              "strokes": np.zeros((syn._MAX_STROKES, 9)), "objects": obj,
              "noise": np.zeros((3, size, size), dtype=np.float32)}
    images, labels, masks = syn._render([params], size)
    return images[0], labels[0], masks[0]


def _oracle(kind, cx, cy, radius, theta, size=64):
    """The shape's pixels by an independent construction: polygons or distances in image space."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    c, s = math.cos(theta), math.sin(theta)

    def polygon(vertices):
        v = np.asarray(vertices) * radius
        placed = np.stack([cx + v[:, 0] * c - v[:, 1] * s, cy + v[:, 0] * s + v[:, 1] * c], axis=1)
        return Polygon(placed).contains_points(points).reshape(size, size)

    def ring_points(n, r, start):
        return [(r * math.cos(start + 2 * math.pi * k / n), r * math.sin(start + 2 * math.pi * k / n))
                for k in range(n)]

    d = np.hypot(xs - cx, ys - cy) / radius
    name = syn.CLASSES[kind]
    if name == "circle":
        return d <= 0.85
    if name == "ring":
        return (d <= 1) & (d >= 0.52)
    if name == "crescent":
        return (d <= 0.95) & (np.hypot(xs - cx - 0.45 * radius * c, ys - cy - 0.45 * radius * s) > 0.75 * radius)
    if name == "square":
        return polygon([(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)])
    if name == "triangle":
        return polygon(ring_points(3, 1.1, -math.pi / 2))
    if name == "star":  # tips at radius 1, inner corners at radius 0.309 / cos 36 deg
        tips = ring_points(5, 1.0, math.pi / 2)
        inner = ring_points(5, 0.309 / math.cos(math.pi / 5), math.pi / 2 + math.pi / 5)
        return polygon([p for pair in zip(tips, inner) for p in pair])
    if name == "cross":
        a, b = 0.28, 0.95
        return polygon([(a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                        (-b, -a), (-a, -a), (-a, -b)])
    # heart: rotate image points into the shape's frame and use the curve (x^2+y^2-1)^3 <= x^2 y^3
    u = ((xs - cx) * c + (ys - cy) * s) / radius
    v = (-(xs - cx) * s + (ys - cy) * c) / radius
    x, y = 1.15 * u, 0.15 - 1.15 * v
    return (x * x + y * y - 1) ** 3 <= x * x * y**3


@pytest.mark.parametrize("kind", range(8))
def test_mask_matches_independent_geometry(kind):
    theta = 0.3 + 0.1 * kind
    _, label, mask = _scene([(kind, 31.3, 30.6, 20.0, theta, (0.9, 0.1, 0.2))])
    expected = _oracle(kind, 31.3, 30.6, 20.0, theta)
    got = (mask == kind + 1).numpy()
    assert set(torch.unique(mask).tolist()) == {0, kind + 1}
    assert expected.sum() > 150
    assert (got != expected).sum() <= 2  # at most a tie on the boundary
    assert torch.equal(label, torch.eye(8)[kind])


def test_painting_agrees_with_mask_and_later_object_wins():
    # A small circle, then a large square over it, then a ring that overlaps the square's corner.
    image, label, mask = _scene([(0, 20, 20, 6, 0.0, (1.0, 0.0, 0.0)), (1, 22, 22, 16, 0.1, (0.0, 0.0, 1.0)),
                                 (4, 40, 40, 12, 0.0, (0.0, 1.0, 0.0))])
    assert torch.equal(label, torch.tensor([0, 1, 0, 0, 1, 0, 0, 0.0]))  # the circle is fully hidden
    square = _oracle(1, 22, 22, 16, 0.1)
    ring = _oracle(4, 40, 40, 12, 0.0)
    assert (square & ring).sum() > 0
    assert bool((mask[torch.from_numpy(ring)] == 5).all())
    assert np.abs((mask == 2).numpy() ^ (square & ~ring)).sum() <= 2
    # Interior pixels carry the object's colour exactly (no noise here); outlines the outline colour.
    outline = torch.tensor([round(v * 255) for v in syn._OUTLINE_COLOUR], dtype=torch.uint8)
    for value, colour in ((2, (0, 0, 255)), (5, (0, 255, 0))):
        pixels = image[:, mask == value].T
        is_colour = (pixels == torch.tensor(colour, dtype=torch.uint8)).all(1)
        is_outline = (pixels == outline).all(1)
        assert bool((is_colour | is_outline).all()) and is_colour.sum() > is_outline.sum() > 0
    assert bool((image[:, mask == 0] == 128).all())  # flat background, untouched


# ------------------------------------------------------------------------------------------------- colour
def test_colour_does_not_identify_the_class(val300):
    images, _, masks = val300
    colours, classes = [], []
    for image, mask in zip(images, masks):
        for value in torch.unique(mask)[1:].tolist():
            # The fill: object pixels whose 3x3 neighbourhood is all object (the outline is excluded).
            other = (mask != value).float()[None, None]
            fill = (mask == value) & (torch.nn.functional.max_pool2d(other, 3, 1, 1)[0, 0] == 0)
            if fill.sum() >= 5:
                colours.append((image[:, fill].float() / 255).mean(1).numpy())
                classes.append(value - 1)
    colours, classes = np.array(colours), np.array(classes)
    assert len(classes) > 500
    # A classifier on the colour alone is at chance level (1/8) ...
    accuracy = cross_val_score(LogisticRegression(max_iter=1000), colours, classes, cv=5).mean()
    assert accuracy < 0.2
    # ... the per-class colour distributions are statistically indistinguishable, channel by channel ...
    for channel in range(3):
        assert kruskal(*[colours[classes == k, channel] for k in range(8)]).pvalue > 1e-3
    # ... and every class spans the colour range.
    for k in range(8):
        assert (colours[classes == k].std(0) > 0.2).all()


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("size", [32, 96])
def test_other_resolutions(size):
    images, labels, masks = generate_shapes(range(20), split="seg", image_size=size)
    assert images.shape == (20, 3, size, size) and masks.shape == (20, size, size)
    present = torch.stack([torch.bincount(m.flatten().long(), minlength=9)[1:] > 0 for m in masks]).float()
    assert torch.equal(labels, present) and labels.sum(1).min() >= 1


def test_bad_inputs():
    with pytest.raises(UnknownNameError, match="train, val, seg"):
        SyntheticShapes("test")
    with pytest.raises(ValidationError, match="num_samples"):
        SyntheticShapes("train", num_samples=0)
    with pytest.raises(ValidationError, match="image_size"):
        SyntheticShapes("train", image_size=8)
    with pytest.raises(ValidationError, match="seed"):
        SyntheticShapes("train", seed=-1)
    with pytest.raises(ValidationError, match="index"):
        SyntheticShapes("val", num_samples=3)["0"]
    with pytest.raises(IndexError, match="index"):
        SyntheticShapes("val", num_samples=3)[3]
    with pytest.raises(ValidationError, match="index"):
        generate_shapes([-1])
    assert len(list(SyntheticShapes("val", num_samples=3))) == 3  # iteration stops at the end
