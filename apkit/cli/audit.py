"""``apkit audit``: compare compressed checkpoints with their original."""

from __future__ import annotations

from pathlib import Path

import click

from apkit.cli import check_teacher_classes, cli, teacher_data_options
from apkit.errors import ValidationError


def _model_name(path: str) -> str:
    # "runs/kd-swa/model.pt" reads better as "kd-swa" than as "model".
    p = Path(path)
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem


@cli.command("audit")
@click.option("--teacher", required=True, type=click.Path(dir_okay=False), help="Checkpoint of the original model.")
@click.option("--student", "students", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Checkpoint of a compressed model (repeatable).")
@click.option("--data", "data_spec", default="synthetic", show_default=True,
              help="synthetic | voc:ROOT | imagenet-seg:ROOT")
@click.option("--split", default="seg", show_default=True, help="Split with segmentation masks.")
@click.option("--methods", default="gradcam", show_default=True,
              help="Comma-separated attribution methods (see `apkit list`).")
@click.option("--protocol", type=click.Choice(["voc", "imagenet"]), default=None,
              help="voc: every correctly predicted ground-truth class; imagenet: the top-1 class. "
                   "[default: imagenet for imagenet-seg data, else voc]")
@click.option("--tolerance", type=int, default=0, show_default=True, help="Pointing-game tolerance in pixels.")
@click.option("--samples", type=int, default=None,
              help="synthetic: number of evaluation images [500]; they are rendered at the teacher's input size.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="apkit-audit", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def audit_command(teacher, students, data_spec, split, methods, protocol, tolerance, samples, batch_size, device,
                  out_dir, quiet):
    """Audit compressed models against their original: accuracy, attribution quality against the masks
    (ROC-AUC, pointing game) and similarity to the original's maps (cosine, normalised L2), per method.

    Writes report.md, report.csv and report.json (with per-pair values) to --out.
    """
    from apkit.audit import audit
    from apkit.data import from_spec
    from apkit.models import load_checkpoint
    from apkit.training import is_main_process
    from apkit.training.distributed import init_from_environment

    init_from_environment(device)  # under torchrun: join the process group

    if samples is not None and data_spec != "synthetic":
        raise ValidationError("--samples applies only to --data synthetic")
    teacher_model = load_checkpoint(teacher)
    data_options = teacher_data_options(teacher_model, data_spec)
    if samples is not None:
        data_options["num_samples"] = samples
    dataset = from_spec(data_spec, split=split, **data_options)
    check_teacher_classes(teacher_model, dataset)
    named = {_model_name(p): load_checkpoint(p, expect_num_classes=dataset.num_classes) for p in students}
    if protocol is None:
        protocol = "imagenet" if data_spec.startswith("imagenet") else "voc"
    report = audit(teacher_model, named, dataset, methods=[m.strip() for m in methods.split(",") if m.strip()],
                   protocol=protocol, tolerance=tolerance, batch_size=batch_size, device=device,
                   progress=not quiet)
    if is_main_process():  # under torchrun every process holds the whole report; one writes it
        paths = report.save(out_dir)
        click.echo(report.to_markdown())
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
