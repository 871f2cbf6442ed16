"""``apkit list``: every registered name, by kind."""

from __future__ import annotations

import importlib

import click

from apkit.cli import cli

# (heading, module, registry attribute); a registry that does not exist yet is skipped.
REGISTRIES = (
    ("datasets", "apkit.data", "DATASETS"),
    ("models", "apkit.models", "MODELS"),
    ("attribution methods", "apkit.attribution", "METHODS"),
    ("metrics", "apkit.metrics", "METRICS"),
    ("compressions", "apkit.compression", "COMPRESSIONS"),
    ("regularizers", "apkit.regularizers", "REGULARIZERS"),
    ("bench profiles", "apkit.bench", "PROFILES"),
)


@cli.command("list")
def list_command() -> None:
    """List the datasets, models, methods, metrics and compressions apkit knows."""
    for heading, module_name, attribute in REGISTRIES:
        registry = getattr(importlib.import_module(module_name), attribute, None)
        if registry is None:
            continue
        click.echo(f"{heading}:")
        width = max((len(n) for n in registry.names()), default=0)
        for name in registry.names():
            click.echo(f"  {name.ljust(width)}  {registry.help(name)}")
