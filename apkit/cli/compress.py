"""``apkit compress``: distil or prune a checkpoint, optionally with attribution matching."""

from __future__ import annotations

import json

import click

from apkit.cli import check_teacher_classes, cli, teacher_data_options
from apkit.errors import ValidationError

METHOD_CHOICES = ("kd", "structured", "unstructured")
REG_CHOICES = ("none", "ewa", "swa", "sswa")
PROFILE_CHOICES = ("quick", "paper", "imagenet")


def _parse_sets(items) -> dict:
    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"--set must look like KEY=VALUE, got {item!r}")
        try:
            options[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = raw  # a bare word, e.g. a layer or model name
    return options


def _format_summary(record: dict) -> str:
    lines = [
        f"{record['method']} + {record['reg']}: {record['params']:,} parameters "
        f"({record['nonzero_params']:,} non-zero, {record['compression_ratio']:.1f}x fewer than the teacher's "
        f"{record['teacher']['params']:,}), {record['macs'] / 1e6:.1f}M MACs",
    ]
    if record.get("weight_sparsity"):
        lines.append(f"conv-weight sparsity {record['weight_sparsity']:.4f}")
    if record.get("config"):
        lines.append(f"architecture {record['config']}")
    val = {k: v for k, v in record.get("val", {}).items() if k != "num_images"}
    if val:
        lines.append("validation " + "  ".join(f"{k} {v:.4f}" for k, v in val.items()))
    lines.append(f"time {record['timings'].get('total_s', 0.0):.0f} s")
    return "\n".join(lines)


@cli.command("compress")
@click.option("--teacher", required=True, type=click.Path(dir_okay=False), help="Checkpoint of the original model.")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="kd", show_default=True,
              help="Knowledge distillation, L1 filter (structured) or global magnitude (unstructured) pruning.")
@click.option("--reg", type=click.Choice(REG_CHOICES), default="none", show_default=True,
              help="Attribution-matching regularizer (none = the naive baseline).")
@click.option("--data", "data_spec", default="synthetic", show_default=True,
              help="synthetic | voc:ROOT | imagenet-seg:ROOT")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for checkpoints, model.pt and record.json.")
@click.option("--profile", type=click.Choice(PROFILE_CHOICES), default="quick", show_default=True,
              help="quick: the synthetic data on a CPU; paper: PASCAL VOC (METHOD §5); imagenet: the supplement's.")
@click.option("--epochs", type=int, default=None, help="Training epochs (per step for iterative pruning).")
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--batch-size", type=int, default=None, help="Images per step.")
@click.option("--width-divisor", type=int, default=None, help="kd: the student's channel divisor (2, 4, 8).")
@click.option("--pruning-ratio", type=float, default=None, help="structured: fraction of filters removed.")
@click.option("--amount", type=float, default=None, help="unstructured: fraction of remaining weights per step.")
@click.option("--steps", type=int, default=None, help="unstructured: pruning steps (1 = one-shot).")
@click.option("--reg-weight", type=float, default=None, help="Regularizer strength [default: 100 EWA, 50 SWA/SSWA].")
@click.option("--drop", type=float, default=None, help="sswa: fraction of teacher channels left out [0.3].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other setting, e.g. --set scheme=paper-vgg16 (repeatable; values are JSON).")
@click.option("--train-samples", type=int, default=None, help="synthetic: number of training images.")
@click.option("--val-samples", type=int, default=None, help="synthetic: number of validation images.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compress_command(teacher, method, reg, data_spec, out_dir, profile, epochs, lr, batch_size, width_divisor,
                     pruning_ratio, amount, steps, reg_weight, drop, sets, train_samples, val_samples, device, seed,
                     resume, quiet):
    """Compress a teacher checkpoint with KD, structured or unstructured pruning, naively or with
    the EWA / SWA / SSWA attribution-matching regularizer.

    Writes --out/model.pt (load it with apkit.models.load_checkpoint or pass it to `apkit audit`)
    and --out/record.json (parameters, non-zero parameters, MACs, sparsity, settings, timings,
    validation metrics).  Rerun with --resume to continue an interrupted run.
    """
    from apkit.compression import compress
    from apkit.data import from_spec
    from apkit.models import load_checkpoint
    from apkit.training.distributed import init_from_environment

    init_from_environment(device)  # under torchrun: join the process group
    given = dict(epochs=epochs, lr=lr, batch_size=batch_size, width_divisor=width_divisor,
                 pruning_ratio=pruning_ratio, amount=amount, steps=steps, reg_weight=reg_weight, drop=drop)
    options = {k: v for k, v in given.items() if v is not None}  # unset options keep the profile's value
    options.update(_parse_sets(sets))
    sizes = {"train": train_samples, "val": val_samples}
    synthetic = data_spec == "synthetic"
    if not synthetic and any(n is not None for n in sizes.values()):
        raise ValidationError("--train-samples and --val-samples apply only to --data synthetic")
    teacher_model = load_checkpoint(teacher)
    data_options = teacher_data_options(teacher_model, data_spec)
    datasets = {
        split: from_spec(data_spec, split=split, **data_options, **({"num_samples": n} if n is not None else {}))
        for split, n in sizes.items()
    }
    check_teacher_classes(teacher_model, datasets["train"])
    _, record = compress(
        teacher_model, method, reg, train_set=datasets["train"], val_set=datasets["val"], settings=profile,
        out_dir=out_dir, resume=resume, device=device, seed=seed, progress=not quiet, **options,
    )
    click.echo(_format_summary(record))
    click.echo(f"wrote {out_dir}/model.pt and {out_dir}/record.json")
