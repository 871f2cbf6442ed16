"""The input checks: what each accepts (and returns), what it refuses, and the message it gives."""

import pytest
import torch
from torch import nn

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.core.validation import (
    check_choice,
    check_dataset,
    check_float,
    check_fraction,
    check_int,
    check_module,
    check_same_device,
    check_same_shape,
    check_tensor,
    parse_overrides,
    resolve_device,
)


def test_check_tensor_accepts_and_returns_the_tensor():
    value = torch.zeros(2, 3)
    assert check_tensor(value, "x") is value
    assert check_tensor(value, "x", ndim=2, floating=True, finite=True) is value
    assert check_tensor(value, "x", ndim=(1, 2)) is value
    assert check_tensor(torch.tensor([1, 2]), "x", finite=True) is not None  # integers are always finite


@pytest.mark.parametrize("value,options,message", [
    ([1.0], {}, "x must be a torch.Tensor, got list"),
    (torch.zeros(2), {"ndim": 2}, r"x must be a tensor of rank 2, got shape \(2,\)"),
    (torch.zeros(2), {"ndim": (3, 4)}, "x must be a tensor of rank 3 or 4"),
    (torch.zeros(2, dtype=torch.long), {"floating": True}, "x must be a floating-point tensor, got torch.int64"),
    (torch.tensor([1.0, float("inf")]), {"finite": True}, "x must be free of NaN and infinite values"),
])
def test_check_tensor_refuses(value, options, message):
    with pytest.raises(ValidationError, match=message):
        check_tensor(value, "x", **options)


def test_check_same_shape_and_device():
    check_same_shape(torch.zeros(2, 3), torch.ones(2, 3), "a", "b")
    with pytest.raises(ValidationError, match=r"a and b must have the same shape, got \(2, 3\) and \(3, 2\)"):
        check_same_shape(torch.zeros(2, 3), torch.zeros(3, 2), "a", "b")
    check_same_device(torch.zeros(1), torch.zeros(2), "a", "b")
    with pytest.raises(ValidationError, match=r"same device, got cpu and meta; move one with \.to\(cpu\)"):
        check_same_device(torch.zeros(1), torch.zeros(1, device="meta"), "a", "b")


def test_check_module_and_dataset():
    net = nn.Linear(1, 1)
    assert check_module(net) is net
    with pytest.raises(ValidationError, match="model must be a torch.nn.Module, got str"):
        check_module("vgg")
    assert check_dataset([1, 2]) == [1, 2]
    assert check_dataset([], allow_empty=True) == []
    with pytest.raises(ValidationError, match="dataset is empty; it must hold at least one example"):
        check_dataset([])
    with pytest.raises(ValidationError, match="train must be a map-style dataset .* got int"):
        check_dataset(3, "train")


def test_check_choice():
    assert check_choice("sum", "reduce", ("mean", "sum")) == "sum"
    with pytest.raises(UnknownNameError, match="unknown reduce 'summ'; did you mean sum\\? choose one of: sum, mean"):
        check_choice("summ", "reduce", ("mean", "sum"))
    with pytest.raises(UnknownNameError, match="unknown reduce 1"):
        check_choice(1, "reduce", ("mean", "sum"))


def test_check_int():
    assert check_int(3, "n", minimum=3, maximum=3) == 3
    for value, message in [(True, "n must be an integer, got True"), (2.0, "n must be an integer, got 2.0"),
                           ("2", "n must be an integer, got '2'"), (0, "n must be >= 1, got 0"),
                           (11, "n must be <= 10, got 11")]:
        with pytest.raises(ValidationError, match=message):
            check_int(value, "n", minimum=1, maximum=10)


def test_check_float_and_fraction():
    assert check_float(1, "x") == 1.0 and isinstance(check_float(1, "x"), float)
    assert check_float(0.0, "x", minimum=0.0) == 0.0
    for value, options, message in [
        (float("nan"), {}, "x must be a finite number, got nan"),
        (False, {}, "x must be a finite number, got False"),
        (0.0, {"minimum": 0.0, "exclusive_minimum": True}, "x must be > 0.0, got 0.0"),
        (-1.0, {"minimum": 0.0}, "x must be >= 0.0, got -1.0"),
        (1.0, {"maximum": 1.0, "exclusive_maximum": True}, "x must be < 1.0, got 1.0"),
        (2.0, {"maximum": 1.0}, "x must be <= 1.0, got 2.0"),
    ]:
        with pytest.raises(ValidationError, match=message):
            check_float(value, "x", **options)
    assert check_fraction(0.0, "p") == 0.0 and check_fraction(1.0, "p", allow_one=True) == 1.0
    with pytest.raises(ValidationError, match="p must be < 1.0"):
        check_fraction(1.0, "p")
    with pytest.raises(ValidationError, match="p must be > 0.0"):
        check_fraction(0.0, "p", allow_zero=False)


def test_parse_overrides():
    assert parse_overrides(["a.b=5", "name=vgg small", "flag=true", "list=[1, 2]", "path=runs/x.pt"]) == [
        (["a", "b"], 5), (["name"], "vgg small"), (["flag"], True), (["list"], [1, 2]), (["path"], "runs/x.pt")]
    for bad in ["novalue", "=3", "a..b=1", " =1"]:
        with pytest.raises(ValidationError, match="a setting must look like a.b=value"):
            parse_overrides([bad])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValidationError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="no CUDA GPU is available; use --device cpu"):
            resolve_device("cuda")
