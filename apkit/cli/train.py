"""``apkit train``: train a model (the teacher) on a dataset and save it with its metrics."""

from __future__ import annotations

import dataclasses

import click

from apkit.cli.group import DEVICE_HELP, OVERWRITE_HELP, cli, run_folder_of
from apkit.core.errors import ValidationError


def parse_rgb(value: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> ``(0.5, 0.5, 0.5)``: one number per colour channel; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise ValidationError(f"{option} must be three comma-separated numbers (red, green, blue) such as "
                              f"0.485,0.456,0.406, got {value!r}")
    return numbers


#: The input options of train and compress: how the data read from files is sized and normalised.
DATA_HELP = ("synthetic | voc:ROOT | imagenet-seg:ROOT | imagefolder:ROOT (your labelled images: "
             "ROOT/train/<class>/*.jpg, ROOT/val/<class>/*.jpg; see `apkit list`)")
IMAGE_SIZE_HELP = ("Side of the square input the images are resized to [synthetic: 64; voc: 227; imagenet-seg, "
                   "imagefolder: 224]")
MEAN_HELP = "Data read from files: the input normalisation mean [ImageNet's 0.485,0.456,0.406; voc: the paper's]."
STD_HELP = "Data read from files: the input normalisation std [ImageNet's 0.229,0.224,0.225; voc: the paper's]."


def input_options(options: dict) -> dict:
    """Pop ``image_size``, ``mean`` and ``std`` from a command's options; ``None`` for those not given."""
    return {"image_size": options.pop("image_size"), "mean": parse_rgb(options.pop("mean"), "--mean"),
            "std": parse_rgb(options.pop("std"), "--std")}


def _milestones(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValidationError(f"--milestones must be comma-separated epochs such as 10,30,40, got {value!r}") from None


def _recipe_options(command):
    """One option per field of :class:`apkit.training.Recipe`, named, typed and described by the field
    itself; unset options keep the recipe's value, and the recipe checks the values."""
    from apkit.training import Recipe

    kinds = {"int": int, "float": float}
    for spec in reversed(dataclasses.fields(Recipe)):
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.metadata['help']} (overrides the recipe)."
        if "choices" in spec.metadata:
            command = click.option(flag, type=click.Choice(spec.metadata["choices"]), default=None,
                                   help=help_text)(command)
        elif spec.type in kinds:
            command = click.option(flag, type=kinds[spec.type], default=None, help=help_text)(command)
        else:  # a sequence of epochs
            command = click.option(flag, default=None, metavar="E1,E2,...", help=help_text)(command)
    return command


class _TrainCommand(click.Command):
    """Lists the training recipes under --help."""

    def format_epilog(self, ctx, formatter):
        from apkit.training import RECIPES

        with formatter.section("Recipes (--recipe)"):
            formatter.write_dl([(name, RECIPES.help(name)) for name in RECIPES.names()])


@cli.command("train", cls=_TrainCommand)
@click.option("--model", default=None,
              help="Architecture (see `apkit list`); VGG input sizes follow the data "
                   "[default: vgg_small for the synthetic data, else vgg16_bn].")
@click.option("--data", "data_spec", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for model.pt, metrics.json and the resumable training/checkpoint.pt.")
@click.option("--recipe", default=None,
              help="Named optimisation settings (listed below) [default: synthetic for the synthetic data, "
                   "else teacher].")
@_recipe_options
@click.option("--width-divisor", type=int, default=None, help="VGG channel divisor (1, 2, 4, 8).")
@click.option("--train-samples", type=int, default=None, help="synthetic: number of training images [4000].")
@click.option("--val-samples", type=int, default=None, help="synthetic: number of validation images [500].")
@click.option("--image-size", type=int, default=None, metavar="N", help=IMAGE_SIZE_HELP + ".")
@click.option("--mean", default=None, metavar="R,G,B", help=MEAN_HELP)
@click.option("--std", default=None, metavar="R,G,B", help=STD_HELP)
@click.option("--select", default=None,
              help="Validation metric that picks the saved epoch [map_class; top1 for single-label data].")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights, shuffling and dropout.")
@click.option("--num-workers", type=int, default=0, show_default=True, help="Data-loading processes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from --out/training/checkpoint.pt.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
def train_command(**options):
    """Train a classifier (the teacher of later compressions) and keep its best validation epoch.

    With no options but --out it trains vgg_small on the embedded synthetic data in about three
    minutes on a laptop CPU.  --data voc:ROOT trains the paper's VGG16-BN with the 'teacher'
    recipe (60 epochs, lr 0.1, x0.1 at 10/30/40; the paper started from ImageNet weights, so
    from scratch consider --recipe teacher-supp).

    Writes --out/model.pt (load it with apkit.models.load_checkpoint; it records the dataset,
    metrics and settings) and --out/metrics.json, and prints the validation metrics.  A finished
    --out is kept unless --resume (reuse or extend it) or --overwrite is given.
    """
    from apkit.core.distributed import init_from_environment

    init_from_environment(options["device"])  # under torchrun: join the process group
    inputs = {"data_spec": options["data_spec"]}
    with run_folder_of("train", options, inputs=inputs, resumable=("epochs",)):
        summary = _train(options)
    metrics = {k: v for k, v in summary.val.items() if k != "num_images"}
    last = summary.history[-1]["epoch"] if summary.history else 0
    click.echo("validation " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
               + f"  (epoch {summary.best_epoch} of {last}, {summary.seconds:.0f} s)")
    click.echo(f"wrote {summary.paths['model']} and {summary.paths['metrics']}")


def _train(options: dict):
    """Call :func:`apkit.training.train_model` with the command's options."""
    from apkit.training import Recipe, train_model

    options = dict(options)
    recipe_changes = {name: options.pop(name) for name in Recipe.field_names()}  # one option per recipe field
    recipe_changes["milestones"] = _milestones(recipe_changes["milestones"])  # the one sequence field
    width_divisor = options.pop("width_divisor")
    data_options = {k: v for k, v in input_options(options).items() if v is not None}
    return train_model(
        options.pop("model"), options.pop("data_spec"), out_dir=options.pop("out_dir"), recipe=options.pop("recipe"),
        overrides=recipe_changes, model_options={} if width_divisor is None else {"width_divisor": width_divisor},
        data_options=data_options,
        train_samples=options.pop("train_samples"), val_samples=options.pop("val_samples"),
        overwrite=options.pop("overwrite"), progress=not options.pop("quiet"), **options,
    )
