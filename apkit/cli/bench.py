"""``apkit bench``: the paper's whole grid on a profile, resumable."""

from __future__ import annotations

import click

from apkit.cli.group import DEVICE_HELP, OVERWRITE_HELP, cli, run_folder_of
from apkit.core.names import BENCH_PROFILE_NAMES


@cli.command("bench")
@click.option("--profile", type=click.Choice(BENCH_PROFILE_NAMES), default="default", show_default=True,
              help="smoke: tiny, ~1 min; default: embedded synthetic data, minutes on a CPU; "
                   "voc / imagenet: the paper's settings on real data (GPU advised).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Root of the real dataset (voc: the folder holding VOCdevkit; imagenet: see `apkit list`).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: apkit-bench-PROFILE]. Rerunning on it continues an interrupted run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a profile setting, e.g. --set teachers.teacher.train.epochs=5 "
                   "(repeatable; values are JSON).")
@click.option("--image-size", type=int, default=None, metavar="N",
              help="voc / imagenet: the side of the square input the images are resized to (data.image_size).")
@click.option("--mean", default=None, metavar="R,G,B", help="voc / imagenet: the input normalisation mean (data.mean).")
@click.option("--std", default=None, metavar="R,G,B", help="voc / imagenet: the input normalisation std (data.std).")
@click.option("--overwrite", is_flag=True,
              help=OVERWRITE_HELP + " A benchmark's own results in --out are removed first.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_command(*, profile, data_root, device, out_dir, overrides, overwrite, quiet, **inputs):
    """Train (or load) a teacher, compress it with KD, structured and unstructured pruning, each
    naively and with the EWA, SWA and SSWA regularizers (the synthetic profiles add 2-bit QAT, naive
    and with SWA), score every model with every attribution method and metric, run ROAR, and write
    results.json, tables.md and figures/.

    Every finished stage is kept: if the run is interrupted, the same command continues it.
    """
    from apkit.bench import run_bench
    from apkit.core.distributed import init_from_environment, is_main_process

    init_from_environment(device)  # under torchrun: join the process group

    out_dir = out_dir or f"apkit-bench-{profile}"
    overrides = [*overrides, *_input_overrides(inputs)]
    options = {"profile": profile, "overrides": list(overrides), "out_dir": out_dir, "overwrite": overwrite}
    with run_folder_of("bench", options, inputs={"data_root": data_root}) as out:
        if overwrite and is_main_process():
            _clear_benchmark(out)
        results = run_bench(profile, out_dir=out_dir, data_root=data_root, device=device,
                            overrides=overrides, progress=not quiet)
    if is_main_process():
        click.echo(f"wrote {out_dir}/results.json, {out_dir}/tables.md and {out_dir}/figures/ "
                   f"(wall time {results['wall_seconds']:.0f} s)")


def _input_overrides(inputs: dict) -> list[str]:
    """``--image-size``, ``--mean`` and ``--std`` as the profile settings they set (``data.image_size``, ...)."""
    import json

    from apkit.cli.train import parse_rgb

    values = {"image_size": inputs["image_size"], "mean": parse_rgb(inputs["mean"], "--mean"),
              "std": parse_rgb(inputs["std"], "--std")}
    return [f"data.{name}={json.dumps(list(value) if isinstance(value, tuple) else value)}"
            for name, value in values.items() if value is not None]


def _clear_benchmark(out) -> None:
    """Remove a previous benchmark's results from ``out`` (``--overwrite``), so that none of its stages is reused."""
    import shutil

    from apkit.core.runs import BENCH_ENTRIES

    for name in BENCH_ENTRIES:
        entry = out / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
