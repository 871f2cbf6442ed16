"""Helpers shared by several test modules (imported by name: pytest puts this folder on the path)."""

import torch
from torch import nn

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
