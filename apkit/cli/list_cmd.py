"""``apkit list``: every registered name, by kind."""

from __future__ import annotations

import click

from apkit.cli.group import cli


@cli.command("list")
def list_command() -> None:
    """List the datasets, models, methods, metrics, compressions, regularizers and profiles apkit knows."""
    from apkit import attribution, bench, compression, data, evaluation, metrics, models, regularizers

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
