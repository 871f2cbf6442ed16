"""The training loop: SGD values, schedules, reproducibility, exact resume, best-epoch selection, DDP."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TinyImages
from sklearn.metrics import average_precision_score, f1_score
from torch import nn
from torch.nn.utils import prune

from apkit.core.errors import ApkitError, CheckpointError, UnknownNameError, ValidationError
from apkit.training import CHECKPOINT_NAME, RECIPES, Recipe, TaskObjective, evaluate, fit


def tiny_cnn(num_classes=3, dropout=0.3):
    torch.manual_seed(123)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 8 * 8, num_classes),
    )


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def train_with(model, data, **settings):
    """``fit`` with the recipe's fields and the run's options given as one flat list of keywords."""
    names = Recipe.field_names()
    recipe = {k: v for k, v in settings.items() if k in names}
    return fit(model, data, recipe, **{k: v for k, v in settings.items() if k not in names})


SETTINGS = dict(epochs=4, batch_size=16, lr=0.05, milestones=(2,), gamma=0.5, device="cpu", progress=False)


class Interrupt(Exception):
    pass


def interrupt_after(epoch):
    def callback(record):
        if record["epoch"] == epoch:
            raise Interrupt

    return callback


# ------------------------------------------------------------------------------------------- values


def test_one_full_batch_epoch_is_one_sgd_step(tiny_data):
    train, _ = tiny_data
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    reference = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    reference.load_state_dict(model.state_dict())
    train_with(model, train, epochs=1, batch_size=len(train), lr=0.1, momentum=0.9, weight_decay=1e-3,
        device="cpu", progress=False)
    images, labels = train.tensors[0], train.tensors[1]
    loss = nn.MultiLabelSoftMarginLoss()(reference(images), labels)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads):
            p -= 0.1 * (g + 1e-3 * p)  # the first momentum buffer is the gradient itself
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_evaluate_matches_sklearn_multilabel(tiny_data):
    _, val = tiny_data
    model = tiny_cnn()
    metrics = evaluate(model, val, device="cpu", batch_size=7)
    model.eval()
    with torch.no_grad():
        logits = model(val.tensors[0]).double()
    y, s = val.tensors[1].numpy(), logits.numpy()
    assert metrics["map_class"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-9)
    per_image = np.mean([average_precision_score(yi, si) for yi, si in zip(y, s)])
    assert metrics["map_image"] == pytest.approx(per_image, abs=1e-9)
    assert metrics["f1"] == pytest.approx(f1_score(y, s >= 0.5, average="samples", zero_division=0), abs=1e-12)
    expected_loss = nn.MultiLabelSoftMarginLoss()(logits, val.tensors[1].double()).item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)  # float32 forward, batched differently
    assert metrics["num_images"] == len(val)
    assert model.training is False  # evaluate restores the mode it found (here: eval from above)


def test_multiclass_fit_and_evaluate():
    train, val = TinyImages(60, task="multiclass", seed=0), TinyImages(30, task="multiclass", seed=1)
    model = tiny_cnn()
    result = train_with(model, train, val_set=val, epochs=3, batch_size=10, lr=0.05, device="cpu", progress=False)
    assert result.select == "top1" and "val_top1" in result.history[0]
    metrics = evaluate(model, val, device="cpu")
    model.eval()
    with torch.no_grad():
        logits = model(val.tensors[0])
    targets = val.tensors[1].argmax(1)
    assert metrics["top1"] == pytest.approx((logits.argmax(1) == targets).double().mean().item(), abs=1e-12)
    assert metrics["loss"] == pytest.approx(nn.functional.cross_entropy(logits.double(), targets).item(), rel=1e-9)
    assert metrics == result.best_metrics


def test_learning_rate_schedules(tiny_data):
    train, _ = tiny_data
    step = train_with(tiny_cnn(), train, epochs=5, batch_size=24, lr=0.1, milestones=(2, 4), gamma=0.1, device="cpu",
               progress=False)
    assert [r["lr"] for r in step.history] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    cosine = train_with(tiny_cnn(), train, epochs=4, batch_size=24, lr=0.1, schedule="cosine", device="cpu",
                 progress=False)
    expected = [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [r["lr"] for r in cosine.history] == pytest.approx(expected)


def test_objective_terms_and_step_callback_are_used(tiny_data):
    train, _ = tiny_data
    losses, steps = [], []

    class Objective:
        def __call__(self, model, images, labels):
            logits = model(images)
            loss = nn.functional.multilabel_soft_margin_loss(logits, labels)
            losses.append((loss.item(), images.shape[0]))
            self.last_terms = {"task": loss.detach(), "constant": 2.0}
            return loss + 0.0, logits

    train_with(tiny_cnn(), train, epochs=2, batch_size=20, lr=0.05, objective=Objective(), device="cpu", progress=False,
        on_step=lambda model, step: steps.append(step))
    assert steps == list(range(1, 7))  # 48 images in batches of 20: 3 steps per epoch
    result = train_with(tiny_cnn(), train, epochs=1, batch_size=20, lr=0.05, objective=Objective(), device="cpu",
                 progress=False)
    record = result.history[0]
    last = losses[-3:]
    mean = sum(v * n for v, n in last) / sum(n for _, n in last)
    assert record["train_loss"] == pytest.approx(mean, rel=1e-6)
    assert record["train_task"] == pytest.approx(mean, rel=1e-6)
    assert record["train_constant"] == 2.0


# ------------------------------------------------------------------------------------- reproducibility


def test_fixed_seed_reproduces_a_run_exactly(tiny_data):
    train, val = tiny_data
    a, b = tiny_cnn(), tiny_cnn()
    ra = train_with(a, train, val_set=val, seed=7, **SETTINGS)
    rb = train_with(b, train, val_set=val, seed=7, **SETTINGS)
    assert same_state(a, b) and without_time(ra.history) == without_time(rb.history)
    c = tiny_cnn()
    train_with(c, train, val_set=val, seed=8, **SETTINGS)
    assert not same_state(a, c)  # the seed matters (shuffling and dropout)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resume_after_interruption_equals_uninterrupted_run(tiny_data, tmp_path, channels_last):
    train, val = tiny_data
    settings = {**SETTINGS, "channels_last": channels_last}
    full = tiny_cnn()
    expected = train_with(full, train, val_set=val, **settings)

    interrupted = tiny_cnn()
    with pytest.raises(Interrupt):
        train_with(interrupted, train, val_set=val, checkpoint_dir=tmp_path, on_epoch_end=interrupt_after(2),
                   **settings)
    resumed_model = tiny_cnn()  # a fresh process would start from a fresh model
    resumed = train_with(resumed_model, train, val_set=val, checkpoint_dir=tmp_path, resume=True, **settings)

    assert same_state(resumed_model, full)
    assert resumed_model[0].weight.is_contiguous()  # given back in the standard memory format
    assert without_time(resumed.history) == without_time(expected.history)
    assert resumed.best_epoch == expected.best_epoch and resumed.best_metrics == expected.best_metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temporary files left
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["epoch"] == 4 and len(saved["history"]) == 4


def test_extending_a_finished_run_equals_a_longer_run(tiny_data, tmp_path):
    train, _ = tiny_data
    settings = {**SETTINGS, "milestones": (3,)}
    full = tiny_cnn()
    train_with(full, train, **settings)
    part = tiny_cnn()
    train_with(part, train, checkpoint_dir=tmp_path, **{**settings, "epochs": 2})
    resumed = tiny_cnn()
    result = train_with(resumed, train, checkpoint_dir=tmp_path, resume=True, **settings)
    assert same_state(resumed, full) and [r["epoch"] for r in result.history] == [1, 2, 3, 4]


def test_pruned_model_trains_checkpoints_and_resumes(tiny_data, tmp_path):
    train, val = tiny_data

    def pruned():
        model = tiny_cnn()
        prune.l1_unstructured(model[0], "weight", amount=0.5)
        prune.l1_unstructured(model[6], "weight", amount=0.7)
        return model

    full = pruned()
    train_with(full, train, val_set=val, **SETTINGS)
    assert int((full[0].weight == 0).sum()) >= 54 and int((full[6].weight == 0).sum()) >= 538
    with pytest.raises(Interrupt):
        train_with(pruned(), train, val_set=val, checkpoint_dir=tmp_path, on_epoch_end=interrupt_after(1), **SETTINGS)
    resumed = pruned()
    train_with(resumed, train, val_set=val, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    assert "0.weight_orig" in resumed.state_dict() and same_state(resumed, full)


def test_best_validation_epoch_is_restored(tiny_data):
    train, val = tiny_data
    states = {}
    model = tiny_cnn()
    result = train_with(model, train, val_set=val, epochs=5, batch_size=8, lr=0.3, device="cpu", progress=False,
                 on_epoch_end=lambda r: states.update({r["epoch"]: {k: v.clone() for k, v in
                                                                    model.state_dict().items()}}))
    scores = [r["val_map_class"] for r in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert result.best_metrics["map_class"] == max(scores)
    best = states[result.best_epoch]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    # Selecting on another metric picks that metric's best epoch.
    by_image = train_with(tiny_cnn(), train, val_set=val, epochs=3, batch_size=8, lr=0.3, device="cpu", progress=False,
                   select="map_image")
    scores = [r["val_map_image"] for r in by_image.history]
    assert by_image.best_epoch == 1 + int(np.argmax(scores))


def test_progress_prints_one_summary_line_per_epoch(tiny_data, capsys):
    train, val = tiny_data
    train_with(tiny_cnn(), train, val_set=val, epochs=2, batch_size=16, lr=0.05, device="cpu", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "  lr " in line]  # not the bars
    assert len(lines) == 2 and "val map_class" in lines[0] and lines[1].startswith("epoch 2/2")


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "override, error",
    [
        ({"epochs": 0}, ValidationError),
        ({"batch_size": 2.5}, ValidationError),
        ({"lr": -0.1}, ValidationError),
        ({"momentum": 1.0}, ValidationError),
        ({"milestones": (3, 2)}, ValidationError),
        ({"gamma": 0.0}, ValidationError),
        ({"schedule": "linear"}, UnknownNameError),
        ({"task": "regression"}, UnknownNameError),
        ({"select": "accuracy"}, UnknownNameError),
        ({"objective": "bce"}, ValidationError),
        ({"resume": True}, ValidationError),
        ({"device": "tpu"}, ValidationError),
    ],
)
def test_bad_arguments_are_refused(tiny_data, override, error):
    train, val = tiny_data
    with pytest.raises(error):
        train_with(tiny_cnn(), train, val_set=val, **{**SETTINGS, **override})


def test_bad_datasets_and_divergence(tiny_data):
    train, _ = tiny_data
    with pytest.raises(ValidationError, match="empty"):
        train_with(tiny_cnn(), TinyImages(0), **SETTINGS)
    with pytest.raises(ValidationError, match="map-style"):
        train_with(tiny_cnn(), [1, 2, 3].__iter__(), **SETTINGS)
    with pytest.raises(ApkitError, match="lower the learning rate"):
        train_with(tiny_cnn(), train, **{**SETTINGS, "lr": 1e30, "epochs": 1})


def test_resume_with_changed_settings_is_refused(tiny_data, tmp_path):
    train, _ = tiny_data
    train_with(tiny_cnn(), train, checkpoint_dir=tmp_path, **{**SETTINGS, "epochs": 1})
    with pytest.raises(CheckpointError, match="lr 0.05 -> 0.1"):
        train_with(tiny_cnn(), train, checkpoint_dir=tmp_path, resume=True, **{**SETTINGS, "lr": 0.1})
    with pytest.raises(CheckpointError, match="does not fit"):
        train_with(tiny_cnn(num_classes=3, dropout=0.0)[:-1].append(nn.Linear(256, 3, bias=False)), train,
            checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train_with(tiny_cnn(), train, checkpoint_dir=tmp_path, resume=True, **SETTINGS)


def test_fit_takes_a_recipe_and_refuses_unknown_options(tiny_data):
    train, val = tiny_data
    recipe = Recipe(epochs=1, lr=0.05, batch_size=16)
    result = fit(tiny_cnn(), train, recipe, val_set=val, device="cpu", progress=False)
    assert [r["epoch"] for r in result.history] == [1] and result.select == "map_class"
    with pytest.raises(UnknownNameError, match="did you mean device"):
        fit(tiny_cnn(), train, recipe, devise="cpu")
    with pytest.raises(UnknownNameError, match="unknown training setting 'epoch'"):
        fit(tiny_cnn(), train, {"epoch": 1, "lr": 0.1})


def test_recipes_hold_the_papers_schedules():
    teacher, supp, kd = RECIPES.get("teacher"), RECIPES.get("teacher-supp"), RECIPES.get("kd")
    assert (teacher.epochs, teacher.lr, teacher.milestones, teacher.weight_decay, teacher.batch_size) == (
        60, 0.1, (10, 30, 40), 1e-4, 64)
    assert (supp.epochs, supp.weight_decay, supp.batch_size) == (250, 5e-4, 128)
    assert (kd.epochs, kd.milestones, kd.momentum, RECIPES.get("kd-code").momentum) == (350, (150, 200, 250), 0.9, 0)
    finetune = RECIPES.get("finetune-structured")
    assert (finetune.lr, finetune.milestones, finetune.momentum, finetune.epochs) == (1e-3, (), 0.9, 60)
    assert RECIPES.get("finetune-unstructured").epochs == 30
    assert TaskObjective("multiclass").task == "multiclass"


# ---------------------------------------------------------------------------------------- distributed


def _ddp_worker(rank, world, folder):
    torch.set_num_threads(1)
    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=world)
    try:
        model = tiny_cnn()
        train, val = TinyImages(40, seed=0), TinyImages(21, seed=1)  # 21: the shares differ in size
        result = train_with(model, train, val_set=val, epochs=1, batch_size=8, lr=0.05, device="cpu", progress=False,
                     checkpoint_dir=folder / f"checkpoints-rank{rank}")
        metrics = evaluate(model, val, device="cpu")
        torch.save({"metrics": metrics, "fit": result.best_metrics, "state": model.state_dict()},
                   folder / f"result{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["metrics"] == results[1]["metrics"] == results[0]["fit"]
    assert all(torch.equal(v, results[1]["state"][k]) for k, v in results[0]["state"].items())
    model = tiny_cnn()
    model.load_state_dict(results[0]["state"])
    single = evaluate(model, TinyImages(21, seed=1), device="cpu", batch_size=5)
    assert single["num_images"] == results[0]["metrics"]["num_images"] == 21
    # Equal up to float32 rounding of the forward pass, which depends on how images are batched.
    for key in ("map_class", "map_image", "f1", "loss"):
        assert single[key] == pytest.approx(results[0]["metrics"][key], rel=1e-6)
    # Only rank 0 wrote its checkpoint.
    assert (tmp_path / "checkpoints-rank0" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "checkpoints-rank1").exists()
