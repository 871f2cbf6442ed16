"""``apkit compress``: distil or prune a model, optionally with attribution matching."""

from __future__ import annotations

import click

from apkit.cli.group import DEVICE_HELP, OVERWRITE_HELP, SPEC_HELP, cli, run_folder_of, spec_identity
from apkit.cli.train import DATA_HELP, IMAGE_SIZE_HELP, MEAN_HELP, STD_HELP, input_options
from apkit.core.names import (
    COMPRESSION_METHOD_NAMES,
    NAIVE,
    PAPER_DROP,
    PAPER_WEIGHTS,
    REGULARIZER_CHOICES,
    SETTINGS_PROFILE_NAMES,
    WEIGHT_BITS,
)


def _format_summary(record) -> str:
    lines = [
        f"{record.method} + {record.regularizer}: {record.params:,} parameters "
        f"({record.nonzero_params:,} non-zero, {record.compression_ratio:.1f}x fewer than the teacher's "
        f"{record.teacher['params']:,}), {record.macs / 1e6:.1f}M MACs",
    ]
    if record.weight_sparsity:
        lines.append(f"conv-weight sparsity {record.weight_sparsity:.4f}")
    if record.config:
        lines.append(f"architecture {record.config}")
    val = {k: v for k, v in record.val.items() if k != "num_images"}
    if val:
        lines.append("validation " + "  ".join(f"{k} {v:.4f}" for k, v in val.items()))
    if record.layers:
        lines.append(f"matching layers: teacher {record.layers['teacher']} {record.layers['teacher_map']}, "
                     f"student {record.layers['student']} {record.layers['student_map']}")
    if record.quantization:
        q, size, latency = record.quantization, record.quantization["size"], record.quantization["latency"]
        lines.append(f"int8 ({q['bits']}-bit weights): {size['bytes']:,} bytes ({size['ratio']:.1f}x smaller), "
                     f"CPU batch of {latency['batch']} in {latency['seconds'] * 1e3:.1f} ms "
                     f"({latency['speedup']:.1f}x the teacher's speed)")
    lines.append(f"time {record.timings.get('total_s', 0.0):.0f} s")
    return "\n".join(lines)

# The options that set one compression setting each (the rest come with --set KEY=VALUE).
_SETTING_OPTIONS = ("epochs", "lr", "batch_size", "optimizer", "width_divisor", "pruning_ratio", "amount", "steps",
                    "bits", "weight", "drop", "teacher_layer")

_WEIGHTS = ", ".join(f"{weight:g} {name.upper()}" for name, weight in PAPER_WEIGHTS.items())


@cli.command("compress")
@click.option("--teacher", required=True, metavar="SPEC", help=f"The original model: {SPEC_HELP}")
@click.option("--num-classes", type=int, default=None, metavar="N",
              help="Number of classes of a teacher given as ARCH=PATH: required for torchvision: and apkit names, "
                   "passed to a factory that takes num_classes; must be the data's (a checkpoint knows its own).")
@click.option("--method", type=click.Choice(COMPRESSION_METHOD_NAMES), default="kd", show_default=True,
              help="Knowledge distillation, L1 filter (structured) or global magnitude (unstructured) pruning, "
                   "post-training int8 quantization (ptq) or quantization-aware training (qat).")
@click.option("--regularizer", type=click.Choice(REGULARIZER_CHOICES), default=NAIVE, show_default=True,
              help="Attribution-matching regularizer (none = the naive baseline).")
@click.option("--data", "data_spec", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--image-size", type=int, default=None, metavar="N",
              help=IMAGE_SIZE_HELP + "; default: the size the teacher's files record, else the data's.")
@click.option("--mean", default=None, metavar="R,G,B", help=MEAN_HELP)
@click.option("--std", default=None, metavar="R,G,B", help=STD_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for checkpoints, model.pt and record.json.")
@click.option("--profile", type=click.Choice(SETTINGS_PROFILE_NAMES), default="quick", show_default=True,
              help="quick: the synthetic data on a CPU; paper: PASCAL VOC (METHOD §5); imagenet: the supplement's.")
@click.option("--epochs", type=int, default=None, help="Training epochs (per step for iterative pruning).")
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--batch-size", type=int, default=None, help="Images per step.")
@click.option("--optimizer", type=click.Choice(("sgd", "adamw")), default=None, help="Optimiser [sgd].")
@click.option("--width-divisor", type=int, default=None, help="kd: the student's channel divisor (2, 4, 8).")
@click.option("--student", default=None, metavar="SPEC",
              help="kd: the student, any architecture: torchvision:NAME, package.module:factory or an apkit name "
                   "(random weights), or ARCH=PATH [the teacher's architecture, --width-divisor narrower].")
@click.option("--pruning-ratio", type=float, default=None, help="structured: fraction of filters removed.")
@click.option("--amount", type=float, default=None, help="unstructured: fraction of remaining weights per step.")
@click.option("--steps", type=int, default=None, help="unstructured: pruning steps (1 = one-shot).")
@click.option("--bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), default=None,
              callback=lambda _ctx, _param, value: None if value is None else int(value),
              help="ptq, qat: weight bit-width (per channel; 2 is ternary; activations are 8-bit) [8].")
@click.option("--weight", type=float, default=None, help=f"Regularizer strength [default: {_WEIGHTS}].")
@click.option("--drop", type=float, default=None,
              help=f"sswa: fraction of teacher channels left out [{PAPER_DROP:g}].")
@click.option("--matching-layer", "teacher_layer", default=None, metavar="NAME",
              help="Layer where attribution is matched (dotted module name; the student's of the same name, or its "
                   "own default) [the audit's default layer at the input size, e.g. layer4 of a ResNet].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other setting, e.g. --set scheme=paper-vgg16 (repeatable; values are JSON).")
@click.option("--train-samples", type=int, default=None, help="synthetic: number of training images.")
@click.option("--val-samples", type=int, default=None, help="synthetic: number of validation images.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (a finished one is loaded).")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compress_command(**options):
    """Compress a teacher model with KD, structured or unstructured pruning, naively or with
    the EWA / SWA / SSWA attribution-matching regularizer, or quantize it to int8 (ptq, or qat
    with or without a regularizer; see docs/quantization.md).

    Writes --out/model.pt (load it with apkit.models.load_checkpoint or pass it to `apkit audit`;
    for a teacher apkit did not build, --out/model_state.pt, a state_dict: audit it as ARCH=PATH)
    and --out/record.json (parameters, non-zero parameters, MACs, sparsity, settings, timings,
    validation metrics; for ptq and qat the int8 model's size and CPU latency against the
    teacher's).  Rerun with --resume to continue an interrupted run; a finished --out is
    kept unless --overwrite is given.
    """
    from apkit.core.distributed import init_from_environment

    init_from_environment(options["device"])  # under torchrun: join the process group
    inputs = {"teacher": spec_identity(options["teacher"]), "data_spec": options["data_spec"]}
    if options.get("student"):
        inputs["student"] = spec_identity(options["student"])
    with run_folder_of("compress", options, inputs=inputs, resumable=("epochs",)):
        out_dir, (model, record) = options["out_dir"], _compress(options)
    click.echo(_format_summary(record))
    # compress saves apkit-built models as checkpoints, any other model as a plain state_dict.
    model_file = "model.pt" if hasattr(model, "apkit_config") else "model_state.pt"
    click.echo(f"wrote {out_dir}/{model_file} and {out_dir}/record.json")


def _compress(options: dict):
    """Call :func:`apkit.compression.compress_checkpoint` with the command's options."""
    from apkit.compression import compress_checkpoint
    from apkit.core.validation import parse_overrides

    options = dict(options)
    given = {name: options.pop(name) for name in _SETTING_OPTIONS}
    settings = {k: v for k, v in given.items() if v is not None}  # unset options keep the profile's value
    settings.update({".".join(key).replace("-", "_"): value for key, value in parse_overrides(options.pop("sets"))})
    out_dir = options.pop("out_dir")
    options.update(input_options(options))
    return compress_checkpoint(
        options.pop("teacher"), options.pop("method"), options.pop("regularizer"), out_dir=out_dir,
        data=options.pop("data_spec"), settings=options.pop("profile"), options=settings,
        progress=not options.pop("quiet"), **options,
    )
