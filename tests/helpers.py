"""Helpers shared by the test modules (imported by name: setup.cfg puts tests/ on the path)."""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from apkit.cli import main


def run_cli(args, capsys):
    """Run ``apkit ARGS`` in this process; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def calibrate_batchnorm(model, size=64, seed=1):
    """Non-trivial BatchNorm statistics and affine parameters, so that folding BatchNorm is really exercised.

    The running statistics are those of random images (so the activations neither vanish nor blow up
    through a deep network, which would make every image's logits equal); the affine parameters are
    random.  Works in the model's dtype.
    """
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, size, size, generator=generator, dtype=dtype))
    for module in batchnorms:
        n = module.num_features
        module.weight.data.copy_(torch.rand(n, generator=generator, dtype=dtype) + 0.5)
        module.bias.data.copy_(torch.rand(n, generator=generator, dtype=dtype) - 0.3)
        module.momentum = 0.1
    return model.eval()


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


def relative_error(ours, reference):
    """Largest difference per map, relative to that map's largest value."""
    dims = tuple(range(1, reference.dim()))
    return float(((ours - reference).abs().amax(dims) / reference.abs().amax(dims)).max())
