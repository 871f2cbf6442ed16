"""``apkit list``: every registered name, by kind."""

from __future__ import annotations

import click

from apkit.cli.group import DEVICE_HELP, cli


@cli.command("list")
@click.option("--device", default="auto", show_default=True,
              help=f"{DEVICE_HELP} Checked like every command's, though listing runs nothing on it.")
def list_command(device: str) -> None:
    """List the datasets, models, methods, metrics, compressions, regularizers and profiles apkit knows."""
    from apkit import attribution, bench, compression, data, evaluation, metrics, models, regularizers
    from apkit.core.validation import resolve_device

    resolve_device(device)  # a misspelt device fails here as everywhere

    registries = (
        ("datasets", data.DATASETS), ("models", models.MODELS),
        ("attribution methods", attribution.ATTRIBUTION_METHODS),
        ("metrics", metrics.METRICS), ("faithfulness metrics", evaluation.FAITHFULNESS_METRICS),
        ("compression methods", compression.COMPRESSION_METHODS),
        ("regularizers", regularizers.REGULARIZERS), ("bench profiles", bench.PROFILES),
    )
    for heading, registry in registries:
        click.echo(f"{heading}:")
        width = max((len(n) for n in registry.names()), default=0)
        for name in registry.names():
            click.echo(f"  {name.ljust(width)}  {registry.help(name)}")
