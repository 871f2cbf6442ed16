"""The bench's tables.md on hand-made results: the verdict and ROAR tables, text for text."""

import math

from apkit.bench.report import _first_seed_rows, _roar_table, _verdict_section


def _difference(mean, half):
    return {"mean": mean, "half_width": half, "values": []}


def test_verdict_table_and_sentences():
    verdict = {"kd-swa": {"compression": "kd", "regularizer": "swa", "method": "gradcam", "seeds": [0, 1],
                          "common_pairs": [12, 10], "sentence": "SWA preserves Grad-CAM better.",
                          "differences": {"auc": _difference(0.0123, 0.004), "cos": _difference(0.05, math.nan),
                                          "map_class": _difference(math.nan, math.nan)}}}
    lines = "\n".join(_verdict_section({"verdict": verdict})).split("\n")
    assert lines[0] == "## Verdict: each regularizer against Naive" and lines[1] == ""
    assert lines[2].startswith("Paired differences (regularized minus Naive) of Grad-CAM scores")
    assert lines[4:] == [
        "| Compression | Regularizer | Δ AUC | Δ Cos | Δ per-class mAP | seeds | pairs |",
        "|---|---|---|---|---|---|---|",
        "| Knowledge distillation | SWA | +1.23 ± 0.40 | +0.050 | n/a | 2 | 10–12 |",
        "",
        "- **Knowledge distillation:** SWA preserves Grad-CAM better.",
        "",
    ]
    assert _verdict_section({"verdict": {}}) == []


def test_roar_table_in_percent_with_missing_scores_as_dashes():
    roar = {"fractions": [0.1, 0.5], "metric": "map_image", "scores": {"gradcam": [0.875, None],
                                                                       "random": [0.9, math.nan]}}
    text = "\n".join(_roar_table(roar))
    assert text.startswith("## ROAR (supplement Figure 3 setting)") and "Score: map_image." in text
    assert text.endswith("| Maps from | k=0.1 | k=0.5 |\n|---|---|---|\n| gradcam | 87.50 | – |\n"
                         "| random | 90.00 | – |\n")


def test_each_naive_model_follows_the_full_network_it_was_compressed_from():
    # The imagenet profile prunes ResNet-34 (structured) and VGG16 (unstructured): each row under its own teacher.
    settings = {"teachers": {"teacher": {"model": "vgg16_bn"}, "resnet34": {"model": "resnet34"}},
                "compressions": {"unstructured": {"method": "unstructured"},
                                 "structured": {"method": "structured", "teacher": "resnet34"}},
                "regularizers": ["none", "swa"], "seeds": [0]}
    assert _first_seed_rows({"settings": settings}) == [
        ("Full network (vgg16_bn)", "teacher", "teacher"),
        ("Unstructured pruning", "unstructured-none-s0", "unstructured"),
        ("Full network (resnet34)", "resnet34", "teacher"),
        ("Structured pruning", "structured-none-s0", "structured"),
    ]
    # One teacher, as in the default profile: one "Full network" row first.
    del settings["compressions"]["structured"]["teacher"]
    assert [row[0] for row in _first_seed_rows({"settings": settings})] == [
        "Full network", "Unstructured pruning", "Structured pruning"]
