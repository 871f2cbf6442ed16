"""The per-(image, class) table of the localization protocol: named tensor columns and one pair key.

:func:`~apkit.evaluation.localization.localization_scores` builds one :class:`PairTable` per model
and method; the comparisons, the report, the figures and the benchmark read it as it is, on its
device.  Lists appear only at the JSON boundary (:meth:`PairTable.to_dict` and
:meth:`PairTable.from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from apkit.core.errors import ValidationError, unknown_name

__all__ = ["KEY_SPAN", "PairTable", "pair_keys"]

KEY_SPAN = 1 << 20  # pair key = image index * KEY_SPAN + class: room for a million classes
# Columns that are not float64 values (NaN where missing) when read back from JSON.
INTEGER_COLUMNS = ("image", "class")
BOOLEAN_COLUMNS = ("correct", "teacher_correct", "kept")


def pair_keys(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The one int64 key of each (image, class) pair: ``image * KEY_SPAN + class``.

    Examples
    --------
    >>> pair_keys(torch.tensor([0, 2]), torch.tensor([5, 1])).tolist()
    [5, 2097153]
    """
    return images.long() * KEY_SPAN + classes.long()


def _column_from_list(name: str, values: Sequence[Any]) -> torch.Tensor:
    if name in INTEGER_COLUMNS:
        return torch.tensor(list(values), dtype=torch.int64)
    if name in BOOLEAN_COLUMNS:
        return torch.tensor(list(values), dtype=torch.bool)
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)


class PairTable:
    """Named columns of equal length, one row per (image, class) pair, kept as tensors.

    Parameters
    ----------
    columns : mapping of str to Tensor
        At least ``image`` and ``class``; usually also ``kept`` and value columns (``auc``,
        ``hit``, ``cos``, ``l2``, ``hit@t``) that are float64 with NaN where not computed.

    Examples
    --------
    >>> table = PairTable({"image": torch.tensor([0, 1]), "class": torch.tensor([2, 2]),
    ...                    "kept": torch.tensor([True, False]), "auc": torch.tensor([0.5, math.nan])})
    >>> len(table), table.column("auc")[0].item()
    (2, 0.5)
    >>> table.to_dict()["kept"]
    [True, False]
    """

    def __init__(self, columns: Mapping[str, torch.Tensor]):
        self.columns = dict(columns)
        for required in INTEGER_COLUMNS:
            if required not in self.columns:
                raise ValidationError(f"a pair table needs an {required!r} column; got {sorted(self.columns)}")
        sizes = {name: len(values) for name, values in self.columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValidationError(f"the columns of a pair table must have one length each, got {sizes}")

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.columns["image"])

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def items(self):
        """``(name, column)`` of every column, in order."""
        return self.columns.items()

    def __repr__(self) -> str:
        return f"PairTable({len(self)} pairs; columns {', '.join(self.columns)})"

    def column(self, name: str) -> torch.Tensor:
        """The column ``name`` (a tensor, not a copy)."""
        if name not in self.columns:
            raise unknown_name(name, "pair column", self.columns)
        return self.columns[name]

    __getitem__ = column

    def keys(self) -> torch.Tensor:
        """The pair key of every row (:func:`pair_keys`)."""
        return pair_keys(self.columns["image"], self.columns["class"])

    def usable(self, column: str | None = None) -> torch.Tensor:
        """Positions of the kept rows (every row without a ``kept`` column), with ``column`` not NaN."""
        keep = self.columns["kept"].clone() if "kept" in self.columns else torch.ones(len(self), dtype=torch.bool)
        if column is not None:
            keep &= ~torch.isnan(self.column(column))
        return keep.nonzero().squeeze(1)

    # -- combining -------------------------------------------------------------------------------
    def select(self, rows: torch.Tensor) -> PairTable:
        """The rows at positions (or under the boolean mask) ``rows``, every column."""
        return PairTable({name: values[rows.to(values.device)] for name, values in self.columns.items()})

    def common(self, other: PairTable, *, column: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in ``self`` and in ``other`` of the pairs both keep (with ``column`` defined in both).

        The positions follow ``self``'s order.

        Examples
        --------
        >>> a = PairTable.from_dict({"image": [0, 0, 1], "class": [1, 2, 1], "auc": [0.9, 0.8, None]})
        >>> b = PairTable.from_dict({"image": [0, 1, 1], "class": [1, 1, 3], "auc": [0.6, 0.9, 0.5]})
        >>> [t.tolist() for t in a.common(b, column="auc")]
        [[0], [0]]
        """
        where_a, where_b = self.usable(column), other.usable(column)
        keys_a, keys_b = self.keys()[where_a], other.keys()[where_b].to(where_a.device)
        order_b = torch.argsort(keys_b)
        sorted_b = keys_b[order_b]
        position = torch.searchsorted(sorted_b, keys_a).clamp(max=max(len(sorted_b) - 1, 0))
        hit = (sorted_b[position] == keys_a if len(sorted_b)
               else torch.zeros(len(keys_a), dtype=torch.bool, device=keys_a.device))
        return where_a[hit], where_b[order_b[position[hit]].to(where_b.device)]

    def join(self, other: PairTable, *, column: str | None = None, suffixes: tuple[str, str] = ("", "_other")
             ) -> PairTable:
        """The pairs both keep, with ``self``'s columns and ``other``'s (renamed with ``suffixes``)."""
        mine, theirs = self.common(other, column=column)
        joined = {f"{name}{suffixes[0]}": values[mine] for name, values in self.columns.items()}
        joined.update({f"{name}{suffixes[1]}": values[theirs] for name, values in other.columns.items()
                       if name not in INTEGER_COLUMNS})
        return PairTable(joined)

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list]:
        """Every column as a plain list (JSON-ready; NaN stays a float NaN)."""
        return {name: values.tolist() for name, values in self.columns.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[Any]]) -> PairTable:
        """The table of :meth:`to_dict`'s lists (``None`` read as NaN in value columns)."""
        if isinstance(data, PairTable):
            return data
        return cls({name: _column_from_list(name, values) for name, values in data.items()})

    @classmethod
    def empty(cls, names: Sequence[str]) -> PairTable:
        """A table without rows, with the columns ``names``."""
        return cls.from_dict({name: [] for name in dict.fromkeys([*INTEGER_COLUMNS, *names])})
