"""The bench's intervals and verdict, on hand-made numbers: closed forms and the pairs both models keep."""

import math

import pytest
import torch

from apkit.bench.stages import stage_keys
from apkit.bench.summary import cell_summaries, sentence, verdicts
from apkit.evaluation.comparison import paired_difference
from apkit.evaluation.pairs import PairTable
from apkit.metrics.statistics import student_t_quantile

SETTINGS = {
    "compressions": {"kd": {}}, "regularizers": ["none", "swa"], "seeds": [0, 1, 2], "protocol": "voc",
    "teachers": {"teacher": {}}, "evaluation": {"primary": "gradcam", "tolerances": [0, 3]},
}


def _pairs(auc, hit, kept, cos):
    return {"gradcam": {"image": [0, 0, 1, 2], "class": [1, 4, 1, 0], "kept": kept, "auc": auc, "hit": hit,
                        "hit@3": hit, "cos": cos}}


def test_paired_difference_uses_only_the_pairs_both_keep():
    a = PairTable.from_dict(_pairs([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1], [True, True, True, False], [0.9] * 4)["gradcam"])
    b = _pairs([0.5, 0.7, 0.6, 0.1], [0, 0, 1, 0], [True, False, True, True], [0.8, 0.8, 0.7, math.nan])["gradcam"]
    b = PairTable.from_dict(b)
    difference, count = paired_difference(a, b, "auc")
    assert count == 2 and difference == pytest.approx((0.9 + 0.7) / 2 - (0.5 + 0.6) / 2)
    assert paired_difference(a, b, "hit") == (pytest.approx(1.0 - 0.5), 2)
    b.columns["kept"] = torch.zeros(4, dtype=torch.bool)
    assert math.isnan(paired_difference(a, b, "auc")[0])


def test_verdict_intervals_are_the_t_interval_of_the_per_seed_differences():
    # Naive: the same pairs every seed; SWA: AUC higher by 0.02, 0.025, 0.03 on the common pairs.
    evaluation, tables = {}, {}
    for seed, gain in enumerate((0.02, 0.025, 0.03)):
        tables[f"kd-none-s{seed}"] = _pairs([0.8, 0.7, 0.9, 0.5], [0, 1, 1, 0], [True] * 4, [0.9, 0.9, 0.9, 0.9])
        tables[f"kd-swa-s{seed}"] = _pairs([0.8 + gain, 0.7 + gain, 0.9 + gain, 0.5 + gain], [1, 1, 1, 0],
                                           [True] * 4, [0.95, 0.95, 0.95, 0.95])
        evaluation[f"kd-none-s{seed}"] = {"predictive": {"map_class": 0.90}}
        evaluation[f"kd-swa-s{seed}"] = {"predictive": {"map_class": 0.90 + 0.01 * (seed - 1)}}
    verdict = verdicts(SETTINGS, evaluation, tables.__getitem__)["kd-swa"]
    auc = verdict["differences"]["auc"]
    assert auc["values"] == pytest.approx([0.02, 0.025, 0.03])
    # mean 0.025, sample sd 0.005, t_{0.975, 2} = 4.3027...: closed form (2p - 1) / sqrt(2 p (1 - p))
    t = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    assert auc["mean"] == pytest.approx(0.025) and auc["half_width"] == pytest.approx(t * 0.005 / math.sqrt(3))
    assert verdict["differences"]["cos"]["mean"] == pytest.approx(0.05)
    assert verdict["differences"]["pointing@3"]["mean"] == pytest.approx(0.25)
    assert verdict["common_pairs"] == [4, 4, 4]
    assert verdict["sentence"].startswith("SWA preserves Grad-CAM better than Naive (AUC +2.5 ± 1.2, Point Acc +25.0 "
                                          "± 0.0, Point@3px +25.0 ± 0.0, Cos +0.050 ± 0.000)")
    assert "at equal accuracy (per-class mAP +0.0 ± 2.5)" in verdict["sentence"]
    assert student_t_quantile(0.975, 2) == pytest.approx(t)


def test_sentences_say_plainly_when_an_interval_includes_zero():
    def d(mean, half):
        return {"mean": mean, "half_width": half, "values": []}

    unclear = sentence("sswa", "gradcam", {"auc": d(0.001, 0.004), "cos": d(0.02, 0.005), "map_class": d(-0.03, 0.01)},
                       "map_class")
    assert unclear.startswith("SSWA does not preserve Grad-CAM measurably better than Naive: the interval of AUC "
                              "includes zero")
    assert unclear.endswith("at lower accuracy (per-class mAP -3.0 ± 1.0).")
    worse = sentence("ewa", "lrp", {"auc": d(-0.02, 0.01), "cos": d(0.01, 0.001), "map_class": d(0.0, 0.01)},
                     "map_class")
    assert worse.startswith("EWA preserves LRP α1β0 worse than Naive")


def test_cell_summaries_average_the_seeds():
    models = {f"kd-{r}-s{s}": {"nonzero_params": 100} for r in ("none", "swa") for s in range(3)}
    evaluation = {k: {"predictive": {"map_class": 0.5 + 0.1 * int(k[-1])}, "methods": {"gradcam": {"auc": 0.9}}}
                  for k in models}
    cells = cell_summaries(SETTINGS, models, evaluation)
    assert set(cells) == {"kd-none", "kd-swa"}
    summary = cells["kd-swa"]["metrics"]
    assert summary["map_class"]["mean"] == pytest.approx(0.6) and summary["auc"]["half_width"] == pytest.approx(0.0)
    assert summary["nonzero_params"]["mean"] == 100


def test_a_compression_with_its_own_seeds_is_summarised_over_them():
    settings = {**SETTINGS, "compressions": {"kd": {}, "structured": {"seeds": [0, 1, 2, 3, 4]}}}
    assert stage_keys(settings)[-5:] == [f"structured-swa-s{s}" for s in range(5)]
    models = {key: {"nonzero_params": 100} for key in stage_keys(settings)}
    evaluation = {k: {"predictive": {"map_class": 0.5 + 0.1 * int(k[-1])}, "methods": {"gradcam": {"auc": 0.9}}}
                  for k in models}
    cells = cell_summaries(settings, models, evaluation)
    assert cells["kd-swa"]["seeds"] == [0, 1, 2] and cells["structured-swa"]["seeds"] == [0, 1, 2, 3, 4]
    assert cells["structured-swa"]["metrics"]["map_class"]["mean"] == pytest.approx(0.7)  # 0.5 .. 0.9
    tables = {key: _pairs([0.8, 0.7, 0.9, 0.5], [0, 1, 1, 0], [True] * 4, [0.9] * 4) for key in models}
    verdict = verdicts(settings, evaluation, tables.__getitem__)["structured-swa"]
    assert verdict["seeds"] == [0, 1, 2, 3, 4] and verdict["common_pairs"] == [4] * 5
