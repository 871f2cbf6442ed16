"""Plain PyTorch / torchvision datasets train and evaluate without apkit attributes; AdamW in the recipe."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from apkit.core.errors import ApkitError
from apkit.training import Recipe, evaluate, fit, num_classes_of, resolve_task

pytestmark = pytest.mark.usefixtures("one_thread")


class _Pairs(torch.utils.data.Dataset):
    """(image, int label) items like torchvision's ImageFolder gives, with ``classes`` and ``targets``."""

    def __init__(self, n=12, classes=("a", "b", "c")):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 8, 8, generator=g)
        self.targets = [i % len(classes) for i in range(n)]
        self.classes = list(classes)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_the_task_is_read_off_the_labels():
    assert resolve_task(None, _Pairs()) == "multiclass"  # Python ints
    assert resolve_task(None, TensorDataset(torch.zeros(2, 1), torch.tensor([0, 1]))) == "multiclass"
    assert resolve_task(None, TensorDataset(torch.zeros(2, 1), torch.eye(2))) == "multilabel"
    assert resolve_task("multilabel", _Pairs()) == "multilabel"  # given wins
    with pytest.raises(ApkitError, match="unknown task"):
        resolve_task("regression", _Pairs())
    assert num_classes_of(_Pairs()) == 3
    plain = TensorDataset(torch.zeros(3, 1), torch.tensor([0, 4, 1]))
    plain.targets = [0, 4, 1]
    assert num_classes_of(plain) == 5
    assert num_classes_of(TensorDataset(torch.zeros(1))) is None


def test_evaluate_a_plain_dataset_gives_top1_against_a_hand_count():
    data = _Pairs()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    torch.manual_seed(0)
    metrics = evaluate(model, data, device="cpu")
    with torch.no_grad():
        logits = model(data.images)
    expected_top1 = (logits.argmax(1) == torch.tensor(data.targets)).double().mean().item()
    expected_loss = F.cross_entropy(logits, torch.tensor(data.targets)).item()
    assert metrics["top1"] == pytest.approx(expected_top1)
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_adamw_recipe_trains_as_torch_adamw():
    """One full-batch epoch of fit with optimizer='adamw' equals one torch.optim.AdamW step by hand."""
    data = _Pairs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    reference = copy.deepcopy(model)
    recipe = Recipe(epochs=1, lr=0.01, batch_size=len(data), weight_decay=0.05, optimizer="adamw")
    fit(model, data, recipe, device="cpu", progress=False)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.05)
    loss = F.cross_entropy(reference(data.images), torch.tensor(data.targets))
    loss.backward()
    optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-6)
    with pytest.raises(ApkitError, match="unknown optimizer .adam.; did you mean adamw"):
        Recipe(epochs=1, lr=0.1, optimizer="adam")
