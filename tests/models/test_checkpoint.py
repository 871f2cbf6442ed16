"""Checkpoints: round trips, pruned models rebuilt, and every way a checkpoint can be bad."""

import os
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from apkit import models
from apkit.core.errors import CheckpointError
from apkit.models import count_parameters, load_checkpoint, save_checkpoint


def _outputs(model, size=64):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size))


def _trained_like(model):
    # Non-default BatchNorm statistics and weights, so a round trip that loses anything shows.
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    return model


def test_checkpoint_round_trip(tmp_path):
    model = _trained_like(models.create("vgg_small", num_classes=8, width_divisor=2))
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"dataset": "synthetic", "metrics": {"map": 0.9}})
    loaded = load_checkpoint(path, expect_arch="vgg_small", expect_num_classes=8)
    assert loaded.apkit_config == model.apkit_config and loaded.apkit_meta["metrics"] == {"map": 0.9}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.equal(_outputs(model), _outputs(loaded)) and not loaded.training
    assert loaded.attribution_layer == "features.20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left


def test_resnet_checkpoint_round_trip(tmp_path):
    model = models.create("resnet18", num_classes=5)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "r.pt"))
    assert torch.equal(_outputs(model, 32), _outputs(loaded, 32))


def _narrow(model):
    """Keep half of the channels of the last two conv blocks (as structured pruning does)."""
    f = model.features
    keep_a = torch.arange(0, f[15].out_channels, 2)
    keep_b = torch.arange(0, f[18].out_channels, 2)

    def conv(old, rows, cols):
        new = nn.Conv2d(len(cols), len(rows), 3, padding=1)
        new.weight.data = old.weight.data[rows][:, cols].clone()
        new.bias.data = old.bias.data[rows].clone()
        return new

    def bn(old, rows):
        new = nn.BatchNorm2d(len(rows))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).data = getattr(old, name).data[rows].clone()
        return new

    all_in = torch.arange(f[15].in_channels)
    f[15], f[16] = conv(f[15], keep_a, all_in), bn(f[16], keep_a)
    f[18], f[19] = conv(f[18], keep_b, keep_a), bn(f[19], keep_b)
    # Linear columns follow the channel-major flattening: channel c owns columns c*16 ... c*16+15.
    columns = (keep_b[:, None] * 16 + torch.arange(16)).reshape(-1)
    old = model.classifier[1]
    linear = nn.Linear(len(columns), old.out_features)
    linear.weight.data, linear.bias.data = old.weight.data[:, columns].clone(), old.bias.data.clone()
    model.classifier[1] = linear
    return model


def test_narrowed_model_is_rebuilt_by_load_checkpoint(tmp_path):
    model = _narrow(_trained_like(models.create("vgg_small", num_classes=8)))
    assert model.features[18].out_channels == 64 and model.classifier[1].in_features == 64 * 16
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "narrow.pt"))
    assert loaded.features[18].weight.shape == (64, 64, 3, 3) and loaded.features[19].num_features == 64
    assert count_parameters(loaded) == count_parameters(model)
    assert torch.equal(_outputs(model), _outputs(loaded))


def test_save_refuses_masks_and_foreign_models(tmp_path):
    model = models.create("vgg_small", num_classes=8)
    prune.l1_unstructured(model.features[0], "weight", amount=0.5)
    with pytest.raises(CheckpointError, match="masks"):
        save_checkpoint(model, tmp_path / "masked.pt")
    with pytest.raises(CheckpointError, match="apkit.models.create"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "foreign.pt")
    assert not list(tmp_path.iterdir())


class _RunsCode:
    """Unpickling this object would call ``open(path, "w")``: it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def good_checkpoint(tmp_path):
    return save_checkpoint(models.create("vgg_small", num_classes=8), tmp_path / "good.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file(good_checkpoint, damage):
    data = good_checkpoint.read_bytes()
    good_checkpoint.write_bytes({"garbage": b"this is not a checkpoint", "truncated": data[: len(data) // 2],
                                 "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(good_checkpoint)


def test_non_apkit_file(tmp_path):
    torch.save({"weight": torch.ones(3)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an apkit checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_other_architecture_and_class_count(good_checkpoint):
    with pytest.raises(CheckpointError, match="'vgg_small' model, not 'vgg16_bn'"):
        load_checkpoint(good_checkpoint, expect_arch="vgg16_bn")
    with pytest.raises(CheckpointError, match="8 classes but the data has 20"):
        load_checkpoint(good_checkpoint, expect_num_classes=20)


def test_state_that_does_not_fit_its_architecture(tmp_path):
    model = models.create("vgg_small", num_classes=8)
    payload = torch.load(save_checkpoint(model, tmp_path / "m.pt"), weights_only=True)
    del payload["state_dict"]["classifier.1.bias"]
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "created-by-unpickling"
    payload = {"format": "apkit-checkpoint", "config": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    # The payload works: a plain unpickle would have created the file.
    with open(path, "rb") as handle:
        assert handle.read(1) in (b"P", pickle.PROTO)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_the_code_running_payload_is_real(tmp_path):
    # Shows what the refusal prevents: unpickling the object really runs its code.
    marker = tmp_path / "created"
    pickle.loads(pickle.dumps(_RunsCode(marker))).close()
    assert marker.exists()
    os.remove(marker)


# ------------------------------------------------------------------------------- bounded before reading

def test_a_zip_bomb_is_refused_before_it_is_expanded(tmp_path):
    import zipfile

    from apkit.models.checkpoint import check_archive_size, safe_load

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data/0", bytes(32_000_000))
    with pytest.raises(CheckpointError, match=r"expands to 32.0 MB from a file of .* kB, more than its own size"):
        safe_load(bomb)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    check_archive_size(good)  # torch's own files pass: their entries are stored, not compressed


def test_a_config_is_checked_before_the_model_is_built(tmp_path):
    from apkit.models.checkpoint import check_config

    base = {"name": "vgg_small", "num_classes": 8, "options": {"width_divisor": 8, "input_size": 32}}
    check_config(base, "m.pt")
    cases = [({"num_classes": 10**10}, "num_classes 10000000000 in its config; it must be an integer from 1 to 100000"),
             ({"num_classes": "8"}, "num_classes '8' (a str)"), ({"num_classes": True}, "num_classes True (a bool)"),
             ({"options": {"input_size": 10**6}}, "input_size 1000000 in its config; it must be an integer from 1 "
                                                  "to 4096"),
             ({"options": {"widht_divisor": 8}}, "option 'widht_divisor' that model 'vgg_small' does not take "
                                                 "(its options: width_divisor, input_size, dropout)")]
    for change, message in cases:
        with pytest.raises(CheckpointError) as caught:
            check_config({**base, **change}, "m.pt")
        assert message in str(caught.value)


def test_weights_holding_nan_are_refused_with_their_file(tmp_path):
    net = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=8)
    with torch.no_grad():
        net.classifier[-1].weight[0, 0] = float("inf")
    path = models.save_checkpoint(net, tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match=r"diverged.pt' hold NaN or infinity \(classifier\.\d+\.weight\)"):
        models.load_checkpoint(path)
