"""On a GPU, apkit computes what it computes on the CPU: every attribution method, every metric, the protocol.

The CPU runs the metrics' numpy kernels and the GPU their torch kernels, so these tests also tie the
two implementations together.  Skipped where CUDA is not available.
"""

import math

import numpy as np
import pytest
import torch

import apkit
from apkit import metrics, models
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA is not available: nothing to compare the CPU results with")

METHODS = ("gradcam", "excitation", "lrp", "rap")  # the paper's four attribution methods
TOLERANCE = 1e-4  # float32 maps: the same sums in another order, relative to the largest value


@pytest.fixture(autouse=True)
def full_float32():
    """No TF32 on the GPU: its 10-bit mantissa would differ from the CPU's float32 by about 1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.fixture(scope="module")
def model_and_inputs():
    torch.manual_seed(0)
    net = models.create("vgg_small", num_classes=8, input_size=64).eval()
    inputs = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    pairs = torch.tensor([[0, 1], [0, 5], [1, 2], [2, 7], [2, 0]])
    return net, inputs, pairs


@pytest.mark.parametrize("method", METHODS)
def test_attribution_methods_equal_on_cuda_and_cpu(method, model_and_inputs):
    net, inputs, pairs = model_and_inputs
    cpu = apkit.explain(net, inputs, pairs, method=method)
    gpu_net = models.create("vgg_small", num_classes=8, input_size=64)
    gpu_net.load_state_dict(net.state_dict())
    gpu = apkit.explain(gpu_net.cuda().eval(), inputs.cuda(), pairs.cuda(), method=method)
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape == (len(pairs), 64, 64)
    assert _relative(gpu, cpu) <= TOLERANCE, method


def _localization_inputs(dtype):
    gen = torch.Generator().manual_seed(2)
    n, h, w = 24, 33, 29
    maps = torch.randint(0, 5, (n, h, w), generator=gen).to(dtype)  # heavy ties, and tied maxima
    maps[::3] = torch.randn(8, h, w, generator=gen, dtype=dtype).clamp(min=0)
    maps[1::3] -= 2  # negative values: the CPU's other AUC kernel
    masks = torch.rand(n, h, w, generator=gen) < 0.3
    masks[0] = False  # NaN: no positive pixel
    ignore = torch.rand(n, h, w, generator=gen) < 0.1
    return maps, masks, ignore


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_localization_metrics_equal_on_cuda_and_cpu(dtype):
    maps, masks, ignore = _localization_inputs(dtype)
    for kwargs in ({}, {"ignore": ignore}):
        cpu = metrics.roc_auc(maps, masks, **{k: v for k, v in kwargs.items()})
        gpu = metrics.roc_auc(maps.cuda(), masks.cuda(), **{k: v.cuda() for k, v in kwargs.items()})
        assert gpu.device.type == "cuda"
        np.testing.assert_array_equal(gpu.cpu().numpy(), cpu.numpy())  # both count in integers: exact
    for tolerance in (0, 1, 3):
        np.testing.assert_array_equal(metrics.pointing_game(maps.cuda(), masks.cuda(), tolerance=tolerance).cpu(),
                                      metrics.pointing_game(maps, masks, tolerance=tolerance))
    np.testing.assert_allclose(metrics.relevance_mass(maps.cuda(), masks.cuda()).cpu(),
                               metrics.relevance_mass(maps, masks), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(metrics.normalize_maps(maps.cuda()).cpu(), metrics.normalize_maps(maps),
                               rtol=1e-6, atol=1e-7)


def test_every_registered_metric_equals_on_cuda_and_cpu():
    gen = torch.Generator().manual_seed(3)
    maps, masks, _ = _localization_inputs(torch.float32)
    other = maps + torch.rand(maps.shape, generator=gen)
    scores = torch.randn(16, 6, generator=gen)
    labels = (torch.rand(16, 6, generator=gen) < 0.4).float()
    labels[0, 0] = 1.0
    targets = torch.randint(0, 6, (16,), generator=gen)
    arguments = {
        "roc_auc": (maps, masks), "pointing_game": (maps, masks), "relevance_mass": (maps, masks),
        "cosine_similarity": (maps, other), "normalized_l2": (maps, other),
        "per_image_average_precision": (scores, labels), "per_class_average_precision": (scores, labels),
        "f1_samples": (scores.sigmoid(), labels), "top1_accuracy": (scores, targets),
    }
    assert set(metrics.METRICS.names()) <= set(arguments), "a new metric needs inputs here"
    for name in metrics.METRICS.names():
        fn = metrics.METRICS.get(name)
        cpu = fn(*arguments[name])
        gpu = fn(*(a.cuda() for a in arguments[name]))
        assert gpu.device.type == "cuda" and gpu.shape == cpu.shape, name
        np.testing.assert_allclose(gpu.cpu().double().numpy(), cpu.double().numpy(), rtol=1e-5, atol=1e-6,
                                   equal_nan=True, err_msg=name)


def test_localization_scores_equal_on_cuda_and_cpu():
    dataset = SyntheticShapes("seg", num_samples=6, image_size=64)
    torch.manual_seed(4)
    net = models.create("vgg_small", num_classes=dataset.num_classes, input_size=64).eval()
    with torch.no_grad():
        net.classifier[-1].bias.add_(10.0)  # every class predicted: every pair is scored
    teacher = models.create("vgg_small", num_classes=dataset.num_classes, input_size=64).eval()
    results = {}
    for device in ("cpu", "cuda"):
        results[device] = {
            method: localization_scores(net.to(device), dataset, method=method, teacher=teacher.to(device),
                                        batch_size=4, device=device, progress=False)
            for method in METHODS
        }
    for method in METHODS:
        cpu, gpu = results["cpu"][method], results["cuda"][method]
        cpu_pairs = {k: torch.as_tensor(v).cpu() for k, v in cpu.pairs.items()}
        gpu_pairs = {k: torch.as_tensor(v).cpu() for k, v in gpu.pairs.items()}
        for column in ("image", "class", "kept"):
            assert torch.equal(gpu_pairs[column], cpu_pairs[column]), (method, column)
        kept = cpu_pairs["kept"].bool()
        assert int(kept.sum()) > 0
        # Float32 maps summed in another order can swap two nearly tied pixels: AUC within 1e-4.
        auc_error = (gpu_pairs["auc"][kept] - cpu_pairs["auc"][kept]).abs().max()
        assert float(auc_error) <= 1e-4, method
        assert torch.equal(gpu_pairs["hit"][kept], cpu_pairs["hit"][kept]), method
        np.testing.assert_allclose(gpu_pairs["cos"].numpy(), cpu_pairs["cos"].numpy(), atol=1e-4, equal_nan=True)
        summary_cpu, summary_gpu = cpu.summary(), gpu.summary()
        assert summary_gpu["kept"] == summary_cpu["kept"]
        assert math.isclose(summary_gpu["auc"], summary_cpu["auc"], abs_tol=1e-4)
