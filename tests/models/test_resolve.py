"""Any model from files (``apkit.models.resolve_model``): spec forms, pruned weights, every bad input, and an
end-to-end audit of a torchvision model pruned by Torch-Pruning, on a ``folder:`` dataset, through the CLI."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch_pruning as tp
import torchvision
from helpers import run_cli
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import apkit
from apkit import data, models
from apkit.core.errors import CheckpointError, UnknownNameError, ValidationError
from apkit.models import parse_model_spec, read_weights, resolve_model
from apkit.models.checkpoint import conform_to_state_dict


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Small models on a shared 2-core machine: one torch thread."""


def _outputs(model, size=32, n=2):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(n, 3, size, size))


def _calibrated(model, size=32):
    """Non-default BatchNorm statistics, so that weights lost in a round trip show in the outputs."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size) * 2 + 0.5)
    return model.eval()


def _prune(model, ratio=0.3, size=32):
    """A pruned copy, as a user of Torch-Pruning makes one: L1 filter importance, the classifier kept."""
    pruned = copy.deepcopy(model)
    head = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
    tp.pruner.MetaPruner(pruned, torch.randn(1, 3, size, size), importance=tp.importance.MagnitudeImportance(p=1),
                         pruning_ratio=ratio, ignored_layers=[head]).step()
    return pruned.eval()


def _safetensors(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _save(obj, path):
    torch.save(obj, path)
    return path


def _params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ specs
def test_spec_forms(tmp_path):
    assert parse_model_spec("runs/kd/model.pt").arch is None
    assert parse_model_spec(tmp_path / "m.pt").path == str(tmp_path / "m.pt")
    spec = parse_model_spec(" torchvision:mobilenet_v2=runs/a=b/pruned.pt ")
    assert (spec.arch, spec.path, spec.kind) == ("torchvision:mobilenet_v2", "runs/a=b/pruned.pt", "torchvision")
    assert parse_model_spec("runs/a=b/model.pt").arch is None  # a path separator before '=': a plain path
    odd = tmp_path / "lr=0.1.pt"
    odd.write_bytes(b"")
    assert parse_model_spec(str(odd)).arch is None  # an existing file wins
    assert parse_model_spec("pkg.nets:build=w.pt").kind == "factory"
    assert parse_model_spec("vgg_small=w.pt").kind == "apkit"
    with pytest.raises(ValidationError, match="names no weights file after '='"):
        parse_model_spec("torchvision:resnet18=")
    for alone in ("torchvision:resnet18", "vgg_small"):
        with pytest.raises(ValidationError, match=f"names an architecture but no weights file; write {alone}=PATH"):
            parse_model_spec(alone)
    with pytest.raises(ValidationError, match="a model spec must be"):
        parse_model_spec("")
    with pytest.raises(ValidationError, match="a model spec must be"):
        parse_model_spec(None)


def test_apkit_checkpoint_path_as_before(tmp_path):
    model = models.create("vgg_small", num_classes=4, width_divisor=2)
    path = models.save_checkpoint(model, tmp_path / "model.pt")
    loaded = resolve_model(str(path))
    assert loaded.apkit_config == model.apkit_config and torch.equal(_outputs(model, 64), _outputs(loaded, 64))
    assert resolve_model(path, num_classes=4).apkit_config["num_classes"] == 4
    with pytest.raises(CheckpointError, match="4 classes but the data has 5"):
        resolve_model(path, num_classes=5)
    # Its weights also load as ARCH=PATH: the full-width vgg_small is narrowed to the saved half width.
    as_weights = resolve_model(f"vgg_small={path}", num_classes=4)
    assert _params(as_weights) == _params(model) and torch.equal(_outputs(as_weights, 64), _outputs(model, 64))


def test_plain_state_dict_as_path_says_how_to_spell_it(tmp_path):
    path = _save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an apkit checkpoint.*ARCH=PATH, e.g. torchvision:resnet18=PATH"):
        resolve_model(path)


# --------------------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("form", ["pt", "safetensors", "nested-state_dict", "nested-model", "dataparallel",
                                  "safetensors-named-pt"])
def test_torchvision_weights_in_every_form(tmp_path, form):
    model = _calibrated(torchvision.models.resnet18(num_classes=3))
    state = model.state_dict()
    path = {
        "pt": lambda: _save(state, tmp_path / "w.pth"),
        "safetensors": lambda: _safetensors(model, tmp_path / "w.safetensors"),
        "nested-state_dict": lambda: _save({"epoch": 3, "state_dict": state, "lr": 0.1}, tmp_path / "w.pt"),
        "nested-model": lambda: _save({"model": state, "optimizer": {}}, tmp_path / "w.pt"),
        "dataparallel": lambda: _save({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.pt"),
        "safetensors-named-pt": lambda: _safetensors(model, tmp_path / "w.pt"),  # recognised by its header
    }[form]()
    loaded = resolve_model(f"torchvision:resnet18={path}", num_classes=3)
    assert not loaded.training and not hasattr(loaded, "apkit_config")
    assert torch.equal(_outputs(model), _outputs(loaded))


def test_apkit_name_as_architecture_can_be_saved_as_a_checkpoint(tmp_path):
    model = _calibrated(models.create("vgg_small", num_classes=5), 64)
    loaded = resolve_model(f"vgg_small={_safetensors(model, tmp_path / 'w.safetensors')}", num_classes=5)
    assert loaded.apkit_config["name"] == "vgg_small" and torch.equal(_outputs(model, 64), _outputs(loaded, 64))
    again = models.load_checkpoint(models.save_checkpoint(loaded, tmp_path / "model.pt"))
    assert torch.equal(_outputs(again, 64), _outputs(model, 64))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_pruned_torchvision_weights_are_rebuilt(tmp_path, name):
    model = _calibrated(torchvision.models.get_model(name, num_classes=4))
    pruned = _prune(model)
    assert _params(pruned) < 0.75 * _params(model)
    loaded = resolve_model(f"torchvision:{name}={_safetensors(pruned, tmp_path / 'p.safetensors')}", num_classes=4)
    assert _params(loaded) == _params(pruned)
    assert torch.allclose(_outputs(pruned), _outputs(loaded), atol=1e-6)
    if name == "mobilenet_v2":  # depthwise convolutions: their groups follow the pruned channel count
        depthwise = [m for m in loaded.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
        assert any(m.groups < o.groups for m, o in zip(depthwise, (m for m in model.modules()
                                                                    if isinstance(m, nn.Conv2d) and m.groups > 1)))


class _Block(nn.Module):
    """A model-defined block: a bare layer-scale parameter next to torch.nn layers."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.scale = nn.Parameter(torch.ones(width, 1, 1))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2))

    def forward(self, x):
        x = self.norm(self.conv(x)) * self.scale
        return self.head(x.mean((2, 3)))


def test_conform_resizes_norms_layer_scales_and_refuses_other_torch_layers():
    wide, narrow = _Block(8), _Block(4)
    with torch.no_grad():
        narrow.scale.uniform_(0.5, 2.0)
    conform_to_state_dict(wide, narrow.state_dict())
    wide.load_state_dict(narrow.state_dict())
    assert wide.norm.num_channels == 4 and wide.head[0].normalized_shape == (4,) and wide.scale.shape == (4, 1, 1)
    assert torch.equal(_outputs(wide, 8), _outputs(narrow, 8))
    attention = nn.Sequential(nn.MultiheadAttention(8, 2))
    state = {k: v[:4] if v.dim() else v for k, v in attention.state_dict().items()}
    with pytest.raises(CheckpointError, match="cannot resize layer '0' \\(MultiheadAttention\\)"):
        conform_to_state_dict(attention, state)


# ------------------------------------------------------------------------------------------- factories
FACTORIES = '''
import torch
from torch import nn

def build(num_classes):
    layers = [nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)]
    return nn.Sequential(*layers)

def fixed():
    return build(2)

def with_default(num_classes=7):
    return build(num_classes)

def broken(num_classes):
    raise RuntimeError("no GPU here\\nsecond line")

def not_a_model(num_classes):
    return 42

class Zoo:
    @staticmethod
    def small(**options):
        return build(options.get("num_classes", 1))
'''


@pytest.fixture
def factory_folder(tmp_path, monkeypatch):
    """``usernets.py`` in the current folder, importable as ``usernets:NAME`` (the module is forgotten after)."""
    (tmp_path / "usernets.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "usernets", raising=False)
    yield tmp_path
    __import__("sys").modules.pop("usernets", None)


def test_factories(factory_folder):
    def weights(classes):
        torch.manual_seed(classes)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))
        return net, _save(net.state_dict(), factory_folder / f"w{classes}.pt")

    net, path = weights(3)
    assert torch.equal(_outputs(resolve_model(f"usernets:build={path}", num_classes=3)), _outputs(net))
    assert torch.equal(_outputs(resolve_model(f"usernets:Zoo.small={path}", num_classes=3)), _outputs(net))
    net2, path2 = weights(2)
    assert torch.equal(_outputs(resolve_model(f"usernets:fixed={path2}")), _outputs(net2))  # takes no num_classes
    net7, path7 = weights(7)
    assert torch.equal(_outputs(resolve_model(f"usernets:with_default={path7}")), _outputs(net7))
    with pytest.raises(ValidationError, match="usernets:build needs the number of classes: pass num_classes"):
        resolve_model(f"usernets:build={path}")
    with pytest.raises(ValidationError, match=r"model factory 'usernets:broken' raised RuntimeError: no GPU here "
                                              r"second line when called as broken\(num_classes=3\)"):
        resolve_model(f"usernets:broken={path}", num_classes=3)
    with pytest.raises(ValidationError, match=r"returned a int when called as not_a_model\(num_classes=3\), not a "
                                              "torch.nn.Module"):
        resolve_model(f"usernets:not_a_model={path}", num_classes=3)
    # A factory that exits the program (sys.exit, SystemExit) is an error, not a silent exit with status 0.
    with pytest.raises(ValidationError, match=r"model factory 'sys:exit' raised SystemExit\(None\) \(it exits the "
                                              r"program\) when called as exit\(\)"):
        resolve_model(f"sys:exit={path}")
    (factory_folder / "exits_on_import.py").write_text("import sys\nsys.exit(4)\n")
    with pytest.raises(ValidationError, match="cannot import 'exits_on_import'.*SystemExit"):
        resolve_model(f"exits_on_import:f={path}")
    with pytest.raises(UnknownNameError, match="'usernets' has no 'biuld'.*callables there: .*build"):
        resolve_model(f"usernets:biuld={path}", num_classes=3)
    with pytest.raises(ValidationError, match="cannot import 'nosuchpkg.nets'.*ModuleNotFoundError: No module named"):
        resolve_model(f"nosuchpkg.nets:build={path}", num_classes=3)
    (factory_folder / "badsyntax.py").write_text("def f(:\n")
    with pytest.raises(ValidationError, match="cannot import 'badsyntax'.*SyntaxError"):
        resolve_model(f"badsyntax:f={path}", num_classes=3)
    assert str(factory_folder) not in __import__("sys").path  # the current folder was on the path only for the import


# ---------------------------------------------------------------------------------------- bad weights
class _RunsCode:
    """Unpickling this object would call ``open(path, "w")``: it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_unknown_names_list_close_matches_first():
    with pytest.raises(UnknownNameError) as info:
        resolve_model("torchvision:mobilenet_v9=w.pt", num_classes=3)
    message = str(info.value)
    assert message.startswith("unknown torchvision model 'mobilenet_v9'; did you mean mobilenet_v2 or mobilenet_v3_")
    assert message.index("mobilenet_v2") < message.index("alexnet")  # then the other classification models
    assert "fasterrcnn" not in message  # detection models are not classifiers
    with pytest.raises(UnknownNameError,
                       match=r"unknown model 'vgg_smal'; did you mean vgg_small\? ARCH is torchvision:NAME"):
        models.build_architecture("vgg_smal", num_classes=3)


def test_weights_of_another_architecture_name_the_first_layers(tmp_path):
    path = _save(torchvision.models.resnet34(num_classes=3).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(CheckpointError) as info:
        resolve_model(f"torchvision:resnet18={path}", num_classes=3)
    message = str(info.value)
    assert message.startswith(f"weights file {str(path)!r} does not fit torchvision:resnet18 (")
    assert "layer1.2.conv1.weight (64, 64, 3, 3) is not in torchvision:resnet18" in message
    assert len(message) < 600 and "\n" not in message
    # Same keys, larger tensors: the weights of a wider ShuffleNet are no pruned narrow one.
    wide = _save(torchvision.models.shufflenet_v2_x1_0(num_classes=3).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match=r"stage2.0.branch1.2.weight is \(58, 24, 1, 1\) in the file but "
                                              r"\(24, 24, 1, 1\) in torchvision:shufflenet_v2_x0_5"):
        resolve_model(f"torchvision:shufflenet_v2_x0_5={wide}", num_classes=3)
    other = _save(torchvision.models.mobilenet_v2(num_classes=3).state_dict(), tmp_path / "mnet.pt")
    with pytest.raises(CheckpointError, match=r"conv1.weight \(64, 3, 7, 7\) is missing from the file.*"
                                              r"features.0.0.weight \(32, 3, 3, 3\) is not in torchvision:resnet18"):
        resolve_model(f"torchvision:resnet18={other}", num_classes=3)


def test_weights_with_another_class_count(tmp_path):
    path = _save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r.pt")
    for classes in (3, 20):  # fewer outputs must not pass for pruning
        with pytest.raises(CheckpointError, match=rf"has 10 classes \(fc.weight is \(10, 512\)\) but "
                                                  rf"torchvision:resnet18 was built with num_classes={classes}; "
                                                  rf"pass num_classes=10"):
            resolve_model(f"torchvision:resnet18={path}", num_classes=classes)
    with pytest.raises(ValidationError, match="torchvision:resnet18 needs the number of classes.*--num-classes N"):
        resolve_model(f"torchvision:resnet18={path}")
    with pytest.raises(ValidationError, match="num_classes must be >= 1"):
        resolve_model(f"torchvision:resnet18={path}", num_classes=0)


def test_files_that_are_not_weights(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    evil = _save({"fc.weight": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        resolve_model(f"torchvision:resnet18={evil}", num_classes=3)
    assert not marker.exists()
    with open(tmp_path / "raw.pkl", "wb") as handle:
        pickle.dump({"fc.weight": _RunsCode(marker)}, handle)
    with pytest.raises(CheckpointError, match="could run code"):
        resolve_model(f"torchvision:resnet18={tmp_path / 'raw.pkl'}", num_classes=3)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_model(f"torchvision:resnet18={tmp_path / 'absent.pt'}", num_classes=3)
    with pytest.raises(CheckpointError, match="holds no state_dict \\(found a list\\)"):
        read_weights(_save([torch.ones(2)], tmp_path / "list.pt"))
    with pytest.raises(CheckpointError, match="entry 'epoch' is a int, not a tensor"):
        read_weights(_save({"fc.weight": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pt"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        read_weights(tmp_path / "bad.safetensors")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_weights(tmp_path / "garbage.pt")


# ------------------------------------------------------------------------------------------------- CLI


def _assert_one_line_error(code, err, *fragments):
    """Exit code 1, exactly one stderr line, ``apkit: error: ...`` naming the problem, no traceback."""
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("apkit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture
def audit_args(tmp_path):
    teacher = models.save_checkpoint(models.create("vgg_small", num_classes=8), tmp_path / "teacher.pt")

    def args(student, *extra):
        return ["audit", "--teacher", teacher, "--student", student, "--samples", 4, "--device", "cpu", "--quiet",
                "--out", tmp_path / "audit", *extra]

    return args


def test_cli_unknown_torchvision_name(audit_args, tmp_path, capsys):
    code, _, err = run_cli(audit_args("torchvision:resnet81=w.pt", "--num-classes", 8), capsys)
    _assert_one_line_error(code, err, "unknown torchvision model 'resnet81'; did you mean resnet18", "alexnet")
    assert not (tmp_path / "audit").exists()


def test_cli_weights_of_another_architecture(audit_args, tmp_path, capsys):
    path = _save(torchvision.models.mobilenet_v2(num_classes=8).state_dict(), tmp_path / "mnet.pt")
    code, _, err = run_cli(audit_args(f"torchvision:resnet18={path}"), capsys)  # students take the data's 8 classes
    _assert_one_line_error(code, err, "does not fit torchvision:resnet18", "conv1.weight (64, 3, 7, 7)",
                           "features.0.0.weight (32, 3, 3, 3)")


def test_cli_factory_that_raises(audit_args, factory_folder, capsys):
    path = _save({"w": torch.ones(1)}, factory_folder / "w.pt")
    code, _, err = run_cli(audit_args(f"usernets:broken={path}"), capsys)
    _assert_one_line_error(code, err, "model factory 'usernets:broken' raised RuntimeError: no GPU here")


def test_cli_pickle_that_would_run_code(audit_args, tmp_path, capsys):
    marker = tmp_path / "created-by-unpickling"
    evil = _save({"fc.weight": _RunsCode(marker)}, tmp_path / "evil.pt")
    code, _, err = run_cli(audit_args(f"torchvision:resnet18={evil}"), capsys)
    _assert_one_line_error(code, err, "evil.pt' was refused", "could run code")
    assert not marker.exists()


def test_cli_compress_a_torchvision_teacher(tmp_path, monkeypatch, capsys):
    from helpers import TinyImages

    import apkit.training.pipeline

    monkeypatch.setattr(apkit.training.pipeline, "from_spec",  # tiny 3-class data instead of rendering images
                        lambda spec, *, split, **o: TinyImages(16 if split == "train" else 8, seed=int(split == "val")))
    teacher = _calibrated(torchvision.models.resnet18(num_classes=3), 16)
    path = _safetensors(teacher, tmp_path / "teacher.safetensors")
    args = ["compress", "--teacher", f"torchvision:resnet18={path}", "--method", "structured",
            "--out", tmp_path / "run", "--epochs", 1, "--batch-size", 8, "--pruning-ratio", 0.3, "--device", "cpu",
            "--quiet"]
    code, _, err = run_cli(args, capsys)
    _assert_one_line_error(code, err, "torchvision:resnet18 needs the number of classes", "--num-classes N")
    code, _, err = run_cli(args + ["--num-classes", 5], capsys)
    _assert_one_line_error(code, err, "has 3 classes (fc.weight is (3, 512))", "pass num_classes=3")
    code, out, err = run_cli(args + ["--num-classes", 3], capsys)
    assert code == 0, err
    assert "wrote" in out and "model_state.pt" in out  # a torchvision student is saved as a plain state_dict
    student = resolve_model(f"torchvision:resnet18={tmp_path / 'run' / 'model_state.pt'}", num_classes=3)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert _params(student) == record["params"] < _params(teacher)


# -------------------------------------------------------------------------------------- end to end
SIZE = 64  # image files; the folder dataset resizes them to its default 224 x 224 input
FOLDER_CLASSES = ("square", "disc", "bar")


def _write_shapes_folder(root, n=6, seed=0):
    """``n`` PNGs of squares, discs and bars on noise, with masks (values 1..3, a void border on the first)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        image = rng.integers(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        for k in rng.choice(3, size=1 + i % 2, replace=False):
            top, left = rng.integers(4, SIZE - 24, 2)
            shape = [(yy >= top) & (yy < top + 18) & (xx >= left) & (xx < left + 18),
                     (yy - top - 10) ** 2 + (xx - left - 10) ** 2 < 81,
                     (yy >= top) & (yy < top + 6) & (xx >= left) & (xx < left + 20)][k]
            image[shape] = rng.integers(120, 256, 3)
            mask[shape] = k + 1
        if i == 0:
            mask[0, :] = 255
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def pruned_mobilenet(tmp_path_factory):
    """A torchvision MobileNetV2 apkit does not register, its 30 %-pruned copy, both saved as plain weights
    (``teacher.pt``, ``pruned.safetensors``), and a ``folder:`` dataset of shapes; built once for the module."""
    tmp = tmp_path_factory.mktemp("e2e")
    root = _write_shapes_folder(tmp / "shapes")
    dataset = data.from_spec(f"folder:{root}", split="seg")
    torch.manual_seed(0)
    teacher = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=len(FOLDER_CLASSES))
    teacher.train()
    with torch.no_grad():  # calibrate BatchNorm on the images, as a trained model's statistics would be
        teacher(torch.stack([dataset[i][0] for i in range(len(dataset))]))
        teacher.classifier[1].bias.fill_(3.0)  # every class predicted: the protocol keeps every (image, class) pair
    teacher.eval()
    student = _prune(teacher, ratio=0.3, size=224)
    files = {"teacher": _save(teacher.state_dict(), tmp / "teacher.pt"),
             "student": _safetensors(student, tmp / "pruned.safetensors")}
    return {"teacher": teacher, "student": student, "dataset": dataset, "root": root, "files": files, "tmp": tmp}


def _same(actual, expected, path="report"):
    """Equal report values: NaN is written as null, floats agree to 1e-6 (the CLI reads the same weights from files)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            _same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            _same(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert actual is None, path
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6), path
    else:
        assert actual == expected, path


def run_audit(case, capsys, *extra, out="audit", expect=0):
    """``apkit audit`` on the saved files of ``case`` (plus ``extra`` options); returns (exit code, stdout, out dir)."""
    files, out_dir = case["files"], case["tmp"] / out
    args = ["audit", "--teacher", f"torchvision:mobilenet_v2={files['teacher']}",
            "--student", f"torchvision:mobilenet_v2={files['student']}", "--data", f"folder:{case['root']}",
            "--num-classes", len(FOLDER_CLASSES), "--methods", "gradcam", "--tolerances", "0,3",
            "--device", "cpu", "--quiet", "--out", out_dir, *extra]
    code, stdout, err = run_cli(args, capsys)
    assert code == expect, err
    case["stderr"] = err
    return code, stdout, out_dir


def test_audit_of_a_pruned_torchvision_model_on_a_folder_matches_the_api(pruned_mobilenet, capsys):
    case = pruned_mobilenet
    assert _params(case["student"]) < 0.75 * _params(case["teacher"])
    _, stdout, out_dir = run_audit(case, capsys)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["settings"]["students"] == ["pruned"] and "| pruned | gradcam |" in stdout
    expected = apkit.audit(case["teacher"], {"pruned": case["student"]}, case["dataset"],
                           attribution_methods=["gradcam"], tolerances=(0, 3), device="cpu", progress=False).to_dict()
    _same(report["predictive"], expected["predictive"])
    _same(report["rows"], expected["rows"])
    _same(report["pairs"], expected["pairs"])
    row = next(r for r in report["rows"] if r["model"] == "pruned")
    assert row["kept"] > 0 and not math.isnan(row["auc"]) and not math.isnan(row["cos"])
    # The confidence: paired differences against the teacher, intervals from the same seeded bootstrap.
    _same(report["comparisons"], expected["comparisons"])
    _same(report["predictive_comparisons"], expected["predictive_comparisons"])
    comparison = report["comparisons"][0]
    assert comparison["common_pairs"] > 0 and comparison["cos"]["low"] <= comparison["cos"]["estimate"]
    assert (out_dir / "report.html").stat().st_size > 10_000 and (out_dir / "figures" / "changed_pairs.png").exists()
    assert "figures/changed_pairs.png" in (out_dir / "report.md").read_text()
