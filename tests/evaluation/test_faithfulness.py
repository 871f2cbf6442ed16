"""Deletion, insertion and ROAD: equal to the peers and to a per-image reference, and sane on a trained model.

Oracles (each on the same inputs, tolerances stated at each test):

* a plain reference written here from the papers' definitions, one image and one step at a time;
* Quantus's ``PixelFlipping`` (deletion with a constant baseline) and ``ROAD``, and its
  ``noisy_linear_imputation`` (a sparse direct solve of the same system);
* pytorch-grad-cam's ROAD (``pytorch_grad_cam.metrics.road``).

Where a peer defines something differently, the comparison follows the peer, as said at each test.
The noise of the imputation is random in every implementation (NumPy's or torch's global
generator), so the oracles compare with ``noise=0``; the noise is tested on its own.
"""

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from helpers import TinyImages
from torch import nn
from torchvision.transforms.functional import gaussian_blur

import apkit
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.evaluation import FAITHFULNESS_METRICS, deletion, deletion_curve, insertion, insertion_curve, road
from apkit.evaluation.faithfulness import (
    curve_auc,
    noisy_linear_imputation,
    pixel_rank,
    road_images,
    target_probability,
)

needs_quantus = pytest.mark.skipif(importlib.util.find_spec("quantus") is None, reason="quantus is not installed")
needs_pgc = pytest.mark.skipif(importlib.util.find_spec("pytorch_grad_cam") is None,
                               reason="grad-cam is not installed")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_net(channels=3, classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


def case(n=3, channels=3, size=12, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, channels, size, size, generator=gen)
    maps = torch.rand(n, size, size, generator=gen)  # continuous: no ties, so every order agrees
    target = torch.randint(0, classes, (n,), generator=gen)
    return small_net(channels, classes, seed).eval(), inputs, maps, target


# ------------------------------------------------------------------------------------ per-image reference


def reference_curve(model, inputs, maps, target, steps, baselines, insert):
    """Petsiuk et al.'s curve, one image and one step at a time: step k changes the first
    floor(k * H * W / steps) pixels of the map's order (highest first), the point at k = 0 included."""
    curves = []
    for image, saliency, label, base in zip(inputs, maps, target, baselines):
        order = sorted(range(saliency.numel()), key=lambda i: -float(saliency.reshape(-1)[i]))
        points = []
        for k in range(steps + 1):
            changed = torch.zeros(saliency.numel(), dtype=torch.bool)
            changed[order[: k * saliency.numel() // steps]] = True
            changed = changed.reshape(saliency.shape)
            picture = torch.where(changed, image, base) if insert else torch.where(changed, base, image)
            with torch.no_grad():
                points.append(float(torch.softmax(model(picture[None]), 1)[0, label]))
        curves.append(points)
    return torch.tensor(curves)


def reference_auc(curve):
    steps = len(curve) - 1
    return sum((curve[k] + curve[k + 1]) / 2 for k in range(steps)) / steps


def test_deletion_and_insertion_equal_the_per_image_reference():
    # Tolerance 1e-6: the same float32 forward passes, batched or one at a time.
    model, inputs, maps, target = case()
    ours = deletion_curve(model, inputs, maps, target, steps=7, batch_size=2)
    expected = reference_curve(model, inputs, maps, target, 7, torch.zeros_like(inputs), insert=False)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.allclose(deletion(model, inputs, maps, target, steps=7),
                          torch.tensor([reference_auc(c.tolist()) for c in expected]), atol=1e-6)
    blurred = gaussian_blur(inputs, [11, 11], [5.0, 5.0])
    ours = insertion_curve(model, inputs, maps, target, steps=5, batch_size=1)
    expected = reference_curve(model, inputs, maps, target, 5, blurred, insert=True)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.allclose(insertion(model, inputs, maps, target, steps=5), curve_auc(expected), atol=1e-6)


def test_per_channel_baseline_and_curve_ends():
    model, inputs, maps, target = case()
    values = (0.5, -1.0, 2.0)
    curve = deletion_curve(model, inputs, maps, target, steps=4, baseline=values)
    baselines = torch.tensor(values).reshape(1, 3, 1, 1).expand_as(inputs)
    expected = reference_curve(model, inputs, maps, target, 4, baselines, insert=False)
    assert torch.allclose(curve, expected, atol=1e-6)
    # The deletion curve starts at the image and the insertion curve ends there.
    untouched = target_probability(model, inputs, target)
    assert torch.allclose(curve[:, 0], untouched, atol=1e-6)
    assert torch.allclose(insertion_curve(model, inputs, maps, target, steps=3)[:, -1], untouched, atol=1e-6)


def test_multilabel_uses_the_sigmoid_of_the_target():
    model, inputs, maps, target = case()
    curve = deletion_curve(model, inputs, maps, target, steps=2, task="multilabel")
    with torch.no_grad():
        logits = model(inputs)
    assert torch.allclose(curve[:, 0], torch.sigmoid(logits[torch.arange(3), target]), atol=1e-6)


def test_the_order_breaks_ties_by_pixel_index():
    assert pixel_rank(torch.zeros(1, 2, 2)).tolist() == [[0, 1, 2, 3]]
    assert pixel_rank(torch.tensor([[[0.0, 1.0], [1.0, 0.5]]])).tolist() == [[3, 0, 1, 2]]


def test_the_model_is_restored_and_not_modified():
    model, inputs, maps, target = case()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deletion(model, inputs, maps, target, steps=2)
    road(model, inputs, maps, target, percentages=[0.5])
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@needs_quantus
def test_deletion_equals_quantus_pixel_flipping():
    """Quantus's PixelFlipping with a constant baseline is deletion without the point at k = 0.

    Quantus broadcasts the (N, 1, H, W) map over the channels and flips ``features_in_step`` of the
    C*H*W entries per step; the C copies of a pixel are adjacent in its order, so every C-th point of
    its curve is our point after the same pixels (all channels) are gone.  Tolerance 1e-6.
    """
    import quantus

    model, inputs, maps, target = case(n=3, size=10)
    flipping = quantus.PixelFlipping(features_in_step=10, perturb_baseline=0.0, normalise=False, abs=False,
                                     disable_warnings=True, display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.array(flipping(model=model, x_batch=inputs.numpy(), y_batch=target.numpy(),
                                   a_batch=maps[:, None].numpy(), softmax=True, device="cpu"))
    ours = deletion_curve(model, inputs, maps, target, steps=10)
    assert np.abs(theirs[:, 2::3] - ours[:, 1:].numpy()).max() < 1e-6


# ------------------------------------------------------------------------------------ ROAD


def reference_imputation(image, removed):
    """The ROAD system written out densely, one image: W_i x_i - sum_{removed j} w_j x_j = sum_{kept j} w_j v_j."""
    _, height, width = image.shape
    weights = {(dy, dx): (1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}
    unknown = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {p: i for i, p in enumerate(unknown)}
    matrix = np.zeros((len(unknown), len(unknown)))
    right = np.zeros((len(unknown), image.shape[0]))
    for i, (y, x) in enumerate(unknown):
        for (dy, dx), w in weights.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < height and 0 <= nx < width):
                continue
            matrix[i, i] += w
            if removed[ny, nx]:
                matrix[i, index[(ny, nx)]] -= w
            else:
                right[i] += w * image[:, ny, nx].double().numpy()
    result = image.clone().double()
    solution = np.linalg.solve(matrix, right)
    for i, (y, x) in enumerate(unknown):
        result[:, y, x] = torch.from_numpy(solution[i])
    return result


@pytest.mark.parametrize(("solver", "tolerance"), [("direct", 1e-6), ("cg", 1e-4)])
def test_imputation_equals_a_dense_solve_of_the_papers_system(solver, tolerance):
    # Against a float64 dense solve: 1e-6 for the sparse LU (float64, rounded to float32 at the end),
    # 1e-4 for conjugate gradients in float32.
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 9, 11, generator=gen)
    removed = torch.rand(2, 9, 11, generator=gen) < 0.7
    ours = noisy_linear_imputation(images, removed, noise=0.0, solver=solver)
    for i in range(2):
        assert torch.allclose(ours[i].double(), reference_imputation(images[i], removed[i]), atol=tolerance)
    assert torch.equal(ours[~removed[:, None].expand_as(images)], images[~removed[:, None].expand_as(images)])


def test_the_cpu_default_is_the_direct_solve_and_both_solvers_agree_on_large_blobs():
    # A smooth map leaves one large removed blob (the slow case for conjugate gradients); tolerance 1e-4.
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, 40, 40, generator=gen)
    smooth = nn.functional.interpolate(torch.rand(2, 1, 3, 3, generator=gen), size=(40, 40), mode="bilinear")[:, 0]
    removed = smooth > smooth.flatten(1).median(dim=1).values[:, None, None]
    direct = noisy_linear_imputation(images, removed, noise=0.0, solver="direct")
    assert torch.equal(noisy_linear_imputation(images, removed, noise=0.0), direct)
    assert (noisy_linear_imputation(images, removed, noise=0.0, solver="cg") - direct).abs().max() < 1e-4
    assert torch.allclose(direct[0].double(), reference_imputation(images[0], removed[0]), atol=1e-6)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_nothing_and_everything_removed(solver):
    images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    removed = torch.zeros(2, 6, 6, dtype=torch.bool)
    removed[1] = True  # nothing is left to impute from: zeros
    ours = noisy_linear_imputation(images, removed, noise=0.0, solver=solver)
    assert torch.equal(ours[0], images[0]) and torch.equal(ours[1], torch.zeros_like(images[1]))


@needs_quantus
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_imputation_equals_quantus_noisy_linear_imputation(solver):
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    gen = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, 32, 32, generator=gen)
    removed = torch.rand(1, 32, 32, generator=gen) < 0.9  # large holes: the slowest case for conjugate gradients
    ours = noisy_linear_imputation(image, removed, noise=0.0, solver=solver)[0].numpy()
    theirs = quantus_imputation(image[0].double().numpy(), np.flatnonzero(removed[0].numpy()), noise=0.0)
    assert np.abs(ours - theirs).max() < 1e-4


def test_imputation_noise_is_seeded_and_has_the_asked_spread():
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 16, 16, generator=gen)
    removed = torch.rand(2, 16, 16, generator=gen) < 0.5
    clean = noisy_linear_imputation(images, removed, noise=0.0)
    noisy = noisy_linear_imputation(images, removed, noise=0.1, generator=torch.Generator().manual_seed(0))
    again = noisy_linear_imputation(images, removed, noise=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    spread = (noisy - clean)[removed[:, None].expand_as(images)]
    assert abs(float(spread.std()) - 0.1) < 0.01
    model, inputs, maps, target = case()
    assert torch.equal(road(model, inputs, maps, target, seed=5), road(model, inputs, maps, target, seed=5))


def test_road_equals_the_per_image_reference():
    # floor(p * H * W) pixels go, first (MoRF) or last (LeRF) in the map's order; tolerance 1e-5.
    model, inputs, maps, target = case(n=2, size=8)
    percentages = [0.1, 0.29, 0.5, 1.0]
    for order in ("morf", "lerf"):
        ours = road(model, inputs, maps, target, percentages=percentages, order=order, noise=0.0, batch_size=1)
        for i in range(2):
            ranking = pixel_rank(maps[i:i + 1])[0].reshape(8, 8)
            for j, p in enumerate(percentages):
                count = math.floor(round(p * 64, 6))
                removed = ranking < count if order == "morf" else ranking >= 64 - count
                if count == 64:
                    picture = torch.zeros_like(inputs[i])  # nothing left to impute from
                else:
                    picture = reference_imputation(inputs[i], removed).float()
                with torch.no_grad():
                    expected = torch.softmax(model(picture[None]), 1)[0, target[i]]
                assert abs(float(ours[i, j]) - float(expected)) < 1e-5, (order, i, p)


@needs_quantus
def test_road_equals_quantus_road():
    """Quantus's ROAD scores whether the top-1 class is still the target (not a probability), so the
    comparison computes that from our ROAD images.  Quantus 0.6 indexes the flattened, channel-broadcast
    map (C*H*W positions) into the image's H*W pixels, which fails for more than one channel: the
    comparison runs on one-channel images.  Percentages are Quantus's integers; exact equality."""
    import quantus

    model, inputs, maps, target = case(n=4, channels=1, size=10, classes=3)
    with torch.no_grad():
        target = model(inputs).argmax(1)  # so that the accuracy starts at 1 and can fall
    quantus_road = quantus.ROAD(percentages=[10, 30, 50, 70, 90], noise=0.0, normalise=False, abs=False,
                                disable_warnings=True, display_progressbar=False, return_aggregate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus_road(model=model, x_batch=inputs.numpy(), y_batch=target.numpy(),
                              a_batch=maps[:, None].numpy(), device="cpu")
    images = road_images(inputs, maps, percentages=[0.1, 0.3, 0.5, 0.7, 0.9], noise=0.0)
    with torch.no_grad():
        correct = (model(images.flatten(0, 1)).argmax(1).reshape(4, 5) == target[:, None]).double().mean(0)
    assert correct.tolist() == pytest.approx([theirs[p] for p in (10, 30, 50, 70, 90)])


@needs_pgc
def test_road_equals_pytorch_grad_cam_road():
    """pytorch-grad-cam removes the pixels at or above the map's ``percentile`` (np.percentile, linear
    interpolation; MoRF) or those of ``1 - map`` (LeRF), so the comparison picks, for each of our
    fractions, the percentile between the two pixels that bound our removed set.  Its imputer is
    built with the default noise, so a zero-noise imputer is given.  Tolerance 1e-5 (probabilities)."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, inputs, maps, target = case(n=3, size=10)
    model.eval()
    pixels = 100
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target]
    for order, remover in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        for fraction in (0.2, 0.5, 0.8):
            removed = round(fraction * pixels)
            percentile = 100 * (pixels - removed - 0.5) / (pixels - 1)
            metric = PerturbationConfidenceMetric(remover(percentile, NoisyLinearImputer(noise=0.0)))
            theirs = metric(inputs, maps.numpy(), targets, model, return_diff=False)
            ours = road(model, inputs, maps, target, percentages=[fraction], order=order, noise=0.0)[:, 0]
            assert np.abs(ours.numpy() - theirs).max() < 1e-5, (order, fraction)


# ------------------------------------------------------------------------------------ sanity


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN that learned TinyImages (class k brightens band k), and images it classifies."""
    torch.manual_seed(0)
    data = TinyImages(240, num_classes=3, image_size=16, task="multiclass", seed=0)
    images, labels = data.tensors[0], data.tensors[1].argmax(1)
    model = small_net(classes=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        for start in range(0, 240, 48):
            loss = nn.functional.cross_entropy(model(images[start:start + 48]), labels[start:start + 48])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = TinyImages(48, num_classes=3, image_size=16, task="multiclass", seed=1)
    inputs, target = test.tensors[0], test.tensors[1].argmax(1)
    with torch.no_grad():
        assert (model(inputs).argmax(1) == target).float().mean() > 0.8
    return model, inputs, target


def test_gradcam_is_more_faithful_than_a_random_map(trained):
    model, inputs, target = trained
    # Grad-CAM of the first convolution: in this two-convolution net, the last convolution's Grad-CAM
    # (measured while writing this test) is no better than a random map for insertion on this data.
    gradcam = apkit.explain(model, inputs, target, method="gradcam", layer="0")
    random_maps = torch.rand(gradcam.shape, generator=torch.Generator().manual_seed(0))
    for maps_name, maps in (("gradcam", gradcam), ("random", random_maps)):
        assert maps.shape == (48, 16, 16), maps_name
    assert deletion(model, inputs, gradcam, target).mean() < deletion(model, inputs, random_maps, target).mean()
    # A blurred TinyImages image keeps its brightened band (a low-frequency signal), so the model already
    # knows the class from the blur alone: insertion starts here from the images' mean, 0.
    assert insertion(model, inputs, gradcam, target, baseline=0.0).mean() > \
        insertion(model, inputs, random_maps, target, baseline=0.0).mean()
    morf = road(model, inputs, gradcam, target, order="morf").mean()
    lerf = road(model, inputs, gradcam, target, order="lerf").mean()
    assert morf < lerf


# ------------------------------------------------------------------------------------ registry and checks


def test_the_registry_names_the_three_metrics():
    assert FAITHFULNESS_METRICS.names()[:3] == ["deletion", "insertion", "road"]
    assert FAITHFULNESS_METRICS.get("road") is road
    assert all(FAITHFULNESS_METRICS.help(name) for name in FAITHFULNESS_METRICS)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x, s, t: deletion(m, x, s[:, :4], t), "maps must be (N, H, W)"),
    (lambda m, x, s, t: deletion(m, x, s, t.float()), "target must be an integer tensor"),
    (lambda m, x, s, t: deletion(m, x, s, t[:2]), "target must be an integer tensor"),
    (lambda m, x, s, t: deletion(m, x, s, t, steps=0), "steps must be >= 1"),
    (lambda m, x, s, t: deletion(m, x, s, t, baseline="black"), "baseline must be a number"),
    (lambda m, x, s, t: deletion(m, x, s, t, baseline=(0.0, 1.0)), "one value per channel (3)"),
    (lambda m, x, s, t: insertion(m, x[..., :4, :4], s[:, :4, :4], t), "baseline 'blur' needs images larger"),
    (lambda m, x, s, t: road(m, x, s, t, percentages=[0.5, 1.5]), "each of percentages must be <= 1.0"),
    (lambda m, x, s, t: road(m, x, s, t, percentages=[]), "percentages must be a non-empty sequence"),
    (lambda m, x, s, t: road(m, x, s, t, batch_size=0), "batch_size must be >= 1"),
    (lambda m, x, s, t: road(m, x, s, t, noise=-1.0), "noise must be >= 0.0"),
    (lambda m, x, s, t: deletion(m, x[0], s, t), "inputs must be a tensor of rank 4"),
])
def test_bad_arguments_are_refused(call, message):
    model, inputs, maps, target = case()
    with pytest.raises(ValidationError) as error:
        call(model, inputs, maps, target)
    assert message in str(error.value)


def test_unknown_order_and_task_suggest_the_known_ones():
    model, inputs, maps, target = case()
    with pytest.raises(UnknownNameError, match="did you mean morf"):
        road(model, inputs, maps, target, order="mrf")
    with pytest.raises(UnknownNameError, match="choose one of: multiclass, multilabel"):
        deletion(model, inputs, maps, target, task="binary")
    with pytest.raises(UnknownNameError, match="did you mean direct"):
        noisy_linear_imputation(inputs, maps > 0.5, solver="drect")


def test_an_unfinished_solve_says_so(monkeypatch):
    from apkit.evaluation import faithfulness

    monkeypatch.setattr(faithfulness, "MAX_ITERATIONS", 3)
    gen = torch.Generator().manual_seed(4)
    images, removed = torch.randn(1, 3, 32, 32, generator=gen), torch.rand(1, 32, 32, generator=gen) < 0.9
    with pytest.warns(RuntimeWarning, match="stopped after 3 iterations with a relative residual"):
        noisy_linear_imputation(images, removed, noise=0.0, solver="cg")
