"""``apkit audit``: compare compressed models with their original."""

from __future__ import annotations

import click

from apkit.cli.group import DEVICE_HELP, OVERWRITE_HELP, SPEC_HELP, cli, comma_list, run_folder_of, spec_identity
from apkit.core.names import GATE_NAMES, PROTOCOL_NAMES

GATE_EXIT_CODE = 3


@cli.command("audit")
@click.option("--teacher", required=True, metavar="SPEC", help=f"The original model: {SPEC_HELP}")
@click.option("--student", "students", required=True, multiple=True, metavar="SPEC",
              help="A compressed model, spelled as --teacher (repeatable); named after its file.")
@click.option("--num-classes", type=int, default=None, metavar="N",
              help="Number of classes of the models given as ARCH=PATH: required for torchvision: and apkit "
                   "names, passed to a factory that takes num_classes (a checkpoint knows its own) [students: the "
                   "data's].")
@click.option("--data", "data_spec", default="synthetic", show_default=True,
              help="synthetic | voc:ROOT | imagenet-seg:ROOT | folder:ROOT (your images: ROOT/images, ROOT/masks, "
                   "ROOT/classes.txt; see `apkit list`)")
@click.option("--split", default="seg", show_default=True, help="Split with segmentation masks.")
@click.option("--methods", default="gradcam", show_default=True,
              help="Comma-separated attribution methods (see `apkit list`).")
@click.option("--protocol", type=click.Choice(PROTOCOL_NAMES), default=None, metavar="NAME",
              help="teacher: the teacher's top-1 class of every image; voc: every correctly predicted ground-truth "
                   "class; imagenet: each model's top-1 class. [default: imagenet for imagenet-seg data, teacher "
                   "for other single-label data, else voc]")
@click.option("--tolerances", default="0", show_default=True, metavar="T1,T2,...",
              help="Pointing-game tolerances in pixels, scored on the same maps; the first is 'Point Acc'.")
@click.option("--samples", type=int, default=None,
              help="synthetic: number of evaluation images [500]; they are rendered at the teacher's input size.")
@click.option("--image-size", type=int, default=None, metavar="N",
              help="folder: side of the square input the images are resized to [224].")
@click.option("--mean", default=None, metavar="R,G,B",
              help="folder: the models' input normalisation mean [ImageNet's: 0.485,0.456,0.406].")
@click.option("--std", default=None, metavar="R,G,B",
              help="folder: the models' input normalisation std [ImageNet's: 0.229,0.224,0.225].")
@click.option("--fail-under", "gates", multiple=True, metavar="NAME=VALUE",
              help="A release gate (repeatable), judged on the pessimistic end of the 95 % interval: cos=0.95, "
                   "agreement=0.9 (at least), l2=0.3, deletion_rise=0.02 (at most), auc_drop=0.01, pointing_drop, "
                   "map_drop, map_class_drop, f1_drop, top1_drop, top5_drop, insertion_drop, road_drop (drop "
                   "against the teacher at most, as a fraction). Checked before any work against what this audit "
                   "measures; every gate's result heads report.html, and a failed gate prints one line and exits "
                   f"with status {GATE_EXIT_CODE}. Names: {', '.join(GATE_NAMES)}.")
@click.option("--layer", "layers", multiple=True, metavar="METHOD=NAME",
              help="The layer a layer method explains, e.g. gradcam=layer3 (repeatable; the same name in every "
                   "model) [each model's attribution layer]. Every layer used is in the report.")
@click.option("--faithfulness", default="deletion,insertion,road", show_default=True, metavar="METRIC,...",
              help="Faithfulness metrics on the teacher's top-1 class of every image (deletion, insertion, road), "
                   "or 'none'.")
@click.option("--faithfulness-steps", type=int, default=10, show_default=True, metavar="N",
              help="Deletion and insertion steps.")
@click.option("--resamples", type=int, default=1000, show_default=True,
              help="Bootstrap resamples (over images) behind every interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="apkit-audit", show_default=True)
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def audit_command(**options):
    """Audit compressed models against their original: accuracy (top-1, top-5 and agreement with the
    original for single-label data), similarity to the original's maps (cosine, normalised L2),
    faithfulness (deletion, insertion, ROAD) and, where images have masks, attribution quality against
    them (ROC-AUC, pointing game), per method, each student's differences from the original with 95 %
    intervals, and release gates.

    Writes report.html (one self-contained page with the verdict and the figures), report.md (linking
    figures/*.png), report.csv and report.json (with every per-pair and per-image value) to --out.
    Exit status: 0, 1 for bad input, 3 when a --fail-under gate fails.
    """
    from apkit.core.distributed import init_from_environment
    from apkit.evaluation import audit_checkpoints, parse_gates

    init_from_environment(options["device"])  # under torchrun: join the process group
    gates = parse_gates(options["gates"])  # a malformed gate stops the command before any work
    arguments = _audit_options(options)  # so do bad layers and faithfulness names
    out_dir = options["out_dir"]
    inputs = {"teacher": spec_identity(options["teacher"]),
              "students": [spec_identity(s) for s in options["students"]], "data_spec": options["data_spec"]}
    shaping = {k: v for k, v in options.items() if k not in ("gates", "batch_size")}  # they change no value
    with run_folder_of("audit", shaping, inputs=inputs):
        # The audit checks each gate against what it will measure before any model runs, and judges them.
        report = audit_checkpoints(options["teacher"], options["students"], gates=gates, **arguments)
    _write_and_judge(report, out_dir)


def _audit_options(options: dict) -> dict:
    """The command's options as keyword arguments of :func:`apkit.evaluation.audit_checkpoints`."""
    from apkit.core.errors import ValidationError

    try:
        tolerances = [int(t) for t in comma_list(options["tolerances"], "--tolerances")]
    except ValueError:
        raise ValidationError(f"--tolerances must be comma-separated integers such as 0,3, got "
                              f"{options['tolerances']!r}") from None
    return {
        "data": options["data_spec"], "split": options["split"],
        "attribution_methods": comma_list(options["methods"], "--methods"), "protocol": options["protocol"],
        "tolerances": tolerances, "samples": options["samples"], "num_classes": options["num_classes"],
        "image_size": options["image_size"], "mean": _floats(options["mean"], "--mean"),
        "std": _floats(options["std"], "--std"), "batch_size": options["batch_size"], "device": options["device"],
        "resamples": options["resamples"], "seed": options["seed"], "progress": not options["quiet"],
        **_layer_and_faithfulness_options(options),
    }


def _layer_and_faithfulness_options(options: dict) -> dict:
    """``--layer`` as ``layers``, ``--faithfulness`` and ``--faithfulness-steps`` as audit options."""
    from apkit.core.errors import ValidationError

    layers = {}
    for item in options.get("layers") or ():
        method, _, layer = item.partition("=")
        if not method.strip() or not layer.strip():
            raise ValidationError(f"--layer must look like METHOD=NAME, e.g. gradcam=layer3, got {item!r}")
        layers[method.strip()] = layer.strip()
    chosen = options.get("faithfulness") or "none"
    metrics = [] if chosen.strip() == "none" else comma_list(chosen, "--faithfulness")
    return {"layers": layers or None, "faithfulness": metrics,
            "faithfulness_steps": options.get("faithfulness_steps", 10)}


def _write_and_judge(report, out_dir) -> None:
    """Write the report (one process under torchrun), print it and the failed gates; exit 3 on a failure."""
    from apkit.core.distributed import is_main_process

    failures = report.failures()
    if is_main_process():  # under torchrun every process holds the whole report; one writes it
        paths = report.save(out_dir)
        click.echo(report.to_markdown())
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
        for line in failures:
            click.echo(f"apkit: {line}", err=True)
    if failures:
        raise SystemExit(GATE_EXIT_CODE)


def _floats(value: str | None, option: str) -> list[float] | None:
    """``"0.5,0.5,0.5"`` -> ``[0.5, 0.5, 0.5]`` (None stays None)."""
    from apkit.core.errors import ValidationError

    if value is None:
        return None
    try:
        return [float(item) for item in comma_list(value, option)]
    except ValueError:
        raise ValidationError(f"{option} must be comma-separated numbers such as 0.5,0.5,0.5, got {value!r}") \
            from None
