"""The training checkpoint: what a compression reads from it without loading the weights."""

import pytest
import torch
from helpers import TinyImages

from apkit.core.errors import CheckpointError
from apkit.training import CHECKPOINT_NAME, Recipe, fit
from apkit.training.state import RESUME_KEYS, finished_epochs


def test_finished_epochs_reads_the_epoch_count(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    fit(net, TinyImages(32), Recipe(epochs=2, lr=0.05, batch_size=16), checkpoint_dir=tmp_path, device="cpu",
        progress=False)
    assert finished_epochs(tmp_path / CHECKPOINT_NAME) == 2
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        finished_epochs(tmp_path / "broken.pt")


def test_every_recipe_setting_but_epochs_must_match_to_resume():
    assert set(RESUME_KEYS) == {*Recipe.field_names(), "task", "seed", "world_size", "select"} - {"epochs"}
