"""`apkit list`: every registry's entries, each under its heading with its help."""

from helpers import run_cli

from apkit import attribution, bench, compression, data, evaluation, metrics, models, regularizers


def test_list_names_every_entry_of_every_registry(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    registries = [("datasets", data.DATASETS), ("models", models.MODELS),
                  ("attribution methods", attribution.ATTRIBUTION_METHODS), ("metrics", metrics.METRICS),
                  ("faithfulness metrics", evaluation.FAITHFULNESS_METRICS),
                  ("compression methods", compression.COMPRESSION_METHODS),
                  ("regularizers", regularizers.REGULARIZERS), ("bench profiles", bench.PROFILES)]
    lines = out.splitlines()
    headings = [line for line in lines if not line.startswith(" ")]
    assert headings == [f"{heading}:" for heading, _ in registries]
    for heading, registry in registries:
        start = lines.index(f"{heading}:") + 1
        entries = [line.split(None, 1) for line in lines[start:start + len(registry)]]
        assert [entry[0] for entry in entries] == registry.names(), heading
        for entry, name in zip(entries, registry.names()):
            assert (entry[1] if len(entry) > 1 else "") == registry.help(name).strip()


def test_list_takes_device_like_every_command(capsys):
    code, out, _ = run_cli(["list", "--device", "cpu"], capsys)
    assert code == 0 and "imagefolder" in out
    code, _, err = run_cli(["list", "--device", "gpu0"], capsys)
    assert code == 1 and "device must be 'cpu', 'cuda', 'cuda:N' or 'auto'" in err
