"""PairTable: named tensor columns, one key per (image, class) pair, the pairs two tables both keep, JSON."""

import json
import math

import pytest
import torch

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.evaluation.pairs import KEY_SPAN, PairTable, pair_keys

NAN = math.nan


def table(**columns):
    return PairTable.from_dict(columns)


def test_the_key_is_image_times_span_plus_class():
    keys = pair_keys(torch.tensor([0, 1, 3]), torch.tensor([7, 0, 2]))
    assert keys.tolist() == [7, KEY_SPAN, 3 * KEY_SPAN + 2] and keys.dtype == torch.int64
    t = table(image=[3, 0], **{"class": [2, 5]})
    assert t.keys().tolist() == [3 * KEY_SPAN + 2, 5]


def test_from_dict_reads_json_types_and_to_dict_gives_them_back():
    data = {"image": [0, 2], "class": [1, 4], "kept": [True, False], "auc": [0.25, None], "hit": [1, 0]}
    t = PairTable.from_dict(json.loads(json.dumps(data)))
    assert t.column("image").dtype == torch.int64 and t.column("kept").dtype == torch.bool
    assert t.column("auc").dtype == torch.float64 and math.isnan(t.column("auc")[1])
    assert t.column("hit").tolist() == [1.0, 0.0]  # value columns are float64, whatever JSON held
    back = t.to_dict()
    assert back["image"] == [0, 2] and back["kept"] == [True, False] and back["auc"][0] == 0.25
    assert math.isnan(back["auc"][1]) and list(t) == list(data) and len(t) == 2
    assert PairTable.from_dict(t) is t


def test_columns_must_have_one_length_and_the_key_columns():
    with pytest.raises(ValidationError, match="one length"):
        PairTable({"image": torch.tensor([0, 1]), "class": torch.tensor([0])})
    with pytest.raises(ValidationError, match="'class'"):
        PairTable({"image": torch.tensor([0])})
    with pytest.raises(UnknownNameError, match="did you mean auc"):
        table(image=[0], **{"class": [0]}, auc=[0.5]).column("acu")


def test_select_takes_rows_of_every_column():
    t = table(image=[0, 1, 2], **{"class": [5, 6, 7]}, auc=[0.1, 0.2, 0.3])
    picked = t.select(torch.tensor([2, 0]))
    assert picked.column("class").tolist() == [7, 5] and picked.column("auc").tolist() == [0.3, 0.1]
    assert t.select(torch.tensor([True, False, True])).column("image").tolist() == [0, 2]


def test_common_keeps_the_pairs_both_keep_with_the_column_defined_in_both():
    a = table(image=[0, 0, 1, 2], **{"class": [1, 2, 1, 0]}, kept=[True, True, True, False],
              auc=[0.9, 0.8, NAN, 0.5])
    b = table(image=[2, 1, 0, 0], **{"class": [0, 1, 2, 1]}, kept=[True, True, True, False],
              auc=[0.4, 0.3, 0.2, 0.1])
    # (0,1): not kept by b; (0,2): common; (1,1): NaN in a; (2,0): not kept by a.
    in_a, in_b = a.common(b, column="auc")
    assert in_a.tolist() == [1] and in_b.tolist() == [2]
    in_a, in_b = a.common(b)  # without a column: NaN does not matter
    assert in_a.tolist() == [1, 2] and in_b.tolist() == [2, 1]
    assert a.keys()[in_a].tolist() == b.keys()[in_b].tolist()


def test_common_with_an_empty_table_and_without_a_kept_column():
    a = table(image=[0, 1], **{"class": [0, 0]}, auc=[0.5, 0.6])
    empty = PairTable.empty(["kept", "auc"])
    assert [t.tolist() for t in a.common(empty)] == [[], []]
    assert [t.tolist() for t in empty.common(a)] == [[], []]
    assert [t.tolist() for t in a.common(a)] == [[0, 1], [0, 1]]  # no kept column: every row counts


def test_join_puts_the_other_tables_columns_beside():
    a = table(image=[0, 1], **{"class": [3, 3]}, kept=[True, True], cos=[0.5, 0.25])
    b = table(image=[1, 0], **{"class": [3, 4]}, kept=[True, True], cos=[0.75, 0.1])
    joined = a.join(b, suffixes=("", "_naive"))
    assert joined.column("image").tolist() == [1] and joined.column("cos").tolist() == [0.25]
    assert joined.column("cos_naive").tolist() == [0.75] and "image_naive" not in joined
