"""Shared test fixtures: a tiny labelled image dataset with the attributes of apkit's datasets, a seed, one thread."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset


class TinyImages(TensorDataset):
    """``(image, label, mask)`` items with ``classes``, ``num_classes``, ``task``, ``mean``, ``std``, ``image_size``.

    Class ``k`` brightens the ``k``-th horizontal band of the image a little under strong noise,
    so a tiny CNN learns it in a few epochs without being perfect at once.  ``task="multiclass"``
    gives one-hot labels (one class per image).
    """

    def __init__(self, n=48, *, num_classes=3, image_size=16, task="multilabel", seed=0):
        gen = torch.Generator().manual_seed(seed)
        if task == "multilabel":
            labels = (torch.rand(n, num_classes, generator=gen) < 0.4).float()
            labels[torch.arange(n), torch.randint(0, num_classes, (n,), generator=gen)] = 1.0
        else:
            labels = torch.nn.functional.one_hot(torch.randint(0, num_classes, (n,), generator=gen),
                                                 num_classes).float()
        images = torch.randn(n, 3, image_size, image_size, generator=gen)
        masks = torch.zeros(n, image_size, image_size, dtype=torch.uint8)
        band = image_size // num_classes
        for k in range(num_classes):
            rows = slice(k * band, (k + 1) * band)
            present = labels[:, k] > 0
            images[present, :, rows, :] += 0.35
            masks[present, rows, :] = k + 1
        super().__init__(images, labels, masks)
        self.classes = tuple(f"class{k}" for k in range(num_classes))
        self.num_classes = num_classes
        self.task = task
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        self.image_size = image_size


@pytest.fixture
def tiny_data():
    """A (train, val) pair of small multi-label datasets."""
    return TinyImages(48, seed=0), TinyImages(20, seed=1)


@pytest.fixture
def seed():
    """Seed every global random generator; the value is returned."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="module")
def one_thread():
    """Run the module's tests on one torch thread: tiny tensors on a shared 2-core machine run far
    faster without thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
