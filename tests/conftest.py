"""Shared test fixtures: a tiny labelled image dataset (helpers.TinyImages), a seed, one thread."""

import random

import numpy as np
import pytest
import torch
from helpers import TinyImages


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
