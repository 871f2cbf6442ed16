"""The bench's faithfulness table: per-seed paired differences from Naive, t intervals, profile checks."""

import math

import pytest
import torch
from scipy import stats

from apkit.bench.faithfulness import faithfulness_section, faithfulness_settings, faithfulness_summary
from apkit.bench.profiles import resolve_profile, validate_profile
from apkit.core.errors import ApkitError
from apkit.evaluation.audit_faithfulness import FaithfulnessSettings


def _settings():
    settings = resolve_profile("smoke", ["seeds=[0, 1, 2]"])
    settings["compressions"] = {"kd": settings["compressions"]["kd"]}
    settings["regularizers"] = ["none", "swa"]
    return settings


def _stage(values):
    """A faith- stage result with the given per-image values of every metric."""
    return {"means": {m: float(torch.tensor([math.nan if v is None else v for v in values]).nanmean())
                      for m in ("deletion", "insertion", "road")},
            "values": {m: list(values) for m in ("deletion", "insertion", "road")}}


def test_differences_from_naive_are_paired_per_seed_then_t_intervals():
    settings = _settings()
    naive = {0: [0.1, 0.2, 0.3], 1: [0.5, 0.5, None], 2: [0.2, 0.2, 0.2]}
    swa = {0: [0.2, 0.2, 0.6], 1: [0.4, 0.9, 0.7], 2: [0.2, 0.3, 0.4]}
    faith = {"teacher": _stage([0.3, 0.3, 0.3])}
    faith.update({f"kd-none-s{s}": _stage(v) for s, v in naive.items()})
    faith.update({f"kd-swa-s{s}": _stage(v) for s, v in swa.items()})
    summary = faithfulness_summary(settings, faith)
    # Per seed: the mean over the images both models have (seed 1 leaves the third image out).
    per_seed = [(0.1 + 0.0 + 0.3) / 3, (-0.1 + 0.4) / 2, (0.0 + 0.1 + 0.2) / 3]
    against = summary["cells"]["kd-swa"]["against_naive"]["deletion"]
    assert against["values"] == pytest.approx(per_seed)
    mean, sem = sum(per_seed) / 3, stats.sem(per_seed)
    assert against["mean"] == pytest.approx(mean)
    assert against["half_width"] == pytest.approx(sem * stats.t.ppf(0.975, 2))
    cell = summary["cells"]["kd-swa"]["metrics"]["insertion"]
    assert cell["values"] == pytest.approx([1 / 3, 2 / 3, 0.3])
    assert summary["teachers"]["teacher"]["road"] == pytest.approx(0.3)
    assert "against_naive" not in summary["cells"]["kd-none"]
    lines = faithfulness_section({"faithfulness": summary, "settings": settings})
    swa_row = next(line for line in "\n".join(lines).splitlines() if line.startswith("| SWA"))
    assert f"+{mean:.3f} ± {sem * stats.t.ppf(0.975, 2):.3f}" in swa_row


def test_the_stage_settings_are_the_audits_faithfulness_settings():
    settings = resolve_profile("default")
    built = faithfulness_settings(settings)
    assert built == FaithfulnessSettings(metrics=("deletion", "insertion", "road"), steps=10,
                                         road_percentages=(0.2, 0.4, 0.6, 0.8), seed=0).checked()
    assert settings["faithfulness"]["images"] == 30


@pytest.mark.parametrize("override, message", [
    ("faithfulness.method=lime", "faithfulness.method"),
    ("faithfulness.metrics=['deletion', 'aopc']", "aopc"),
    ("faithfulness.images=0", "faithfulness.images"),
    ("faithfulness.road_percentages=[1.5]", "road_percentages"),
    ("faithfulness.enabled=1", "true or false"),
])
def test_bad_faithfulness_settings_are_refused_before_any_work(override, message):
    with pytest.raises(ApkitError, match=message):
        validate_profile(resolve_profile("smoke", [override]))
