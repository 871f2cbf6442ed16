"""One model's logits and attribution maps, kept by dataset index: the teacher's work done once.

Every student of an audit is compared with the same teacher on (image, class) pairs of the same
dataset, and most of those pairs are the same for every student.  A :class:`MapCache` of the
teacher remembers its logits per image and its maps per (image, class) pair and method; each
student's protocol reads what is there and adds only what is missing, so the teacher's maps of
a pair are computed once however many students are audited (and the teacher's own scores read
them too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from apkit import attribution
from apkit.core.validation import check_module
from apkit.evaluation.pairs import pair_keys

__all__ = ["MapCache"]


class _KeyedStore:
    """Rows of a tensor kept under int64 keys, sorted, looked up and extended in batches."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def get(self, keys: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The rows of ``keys``; ``compute(positions)`` gives the rows of the keys not stored yet."""
        found = torch.zeros(len(keys), dtype=torch.bool, device=keys.device)
        where = torch.zeros(len(keys), dtype=torch.long, device=keys.device)
        if self.keys is not None and len(self.keys):
            stored = self.keys.to(keys.device)
            where = torch.searchsorted(stored, keys).clamp(max=len(stored) - 1)
            found = stored[where] == keys
        missing = (~found).nonzero().squeeze(1)
        if len(missing):
            fresh = compute(missing)
            # Keep one row per key (a batch may ask for a key twice).
            order = torch.argsort(keys[missing], stable=True)
            sorted_keys = keys[missing][order]
            first = torch.ones_like(sorted_keys, dtype=torch.bool)
            first[1:] = sorted_keys[1:] != sorted_keys[:-1]
            new_keys, new_rows = sorted_keys[first], fresh[order][first]
            self._insert(new_keys, new_rows)
            stored = self.keys.to(keys.device)
            where = torch.searchsorted(stored, keys)
        return self.rows[where.to(self.rows.device)].to(keys.device)

    def _insert(self, keys: torch.Tensor, rows: torch.Tensor) -> None:
        if self.keys is None:
            self.keys, self.rows = keys, rows
        else:
            self.keys = torch.cat([self.keys, keys.to(self.keys.device)])
            self.rows = torch.cat([self.rows, rows.to(self.rows.device)])
        order = torch.argsort(self.keys)
        self.keys, self.rows = self.keys[order], self.rows[order]

    def __len__(self) -> int:
        return 0 if self.keys is None else len(self.keys)


class MapCache:
    """A model's logits per image and attribution maps per (image, class) and method, computed once.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose outputs are kept (usually the teacher of an audit).
    layer : str or mapping, optional
        Layer of layer methods (default: the model's attribution layer), or ``{method: layer}``
        for a layer per method (methods not named take the default).
    explain_options : mapping, optional
        Extra keyword arguments of :func:`apkit.explain`.

    The cache is keyed by the dataset indices of the images, so it serves one dataset (and one
    evaluation transform) only.  It holds what it is asked for, on the device it was computed on.

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=3).eval()
    >>> cache = MapCache(net)
    >>> images, index = torch.randn(2, 3, 64, 64), torch.tensor([10, 11])
    >>> pairs = torch.tensor([[0, 1], [1, 2]])
    >>> first = cache.maps("gradcam", index, images, pairs)
    >>> again = cache.maps("gradcam", index, images, pairs)  # read, not computed
    >>> torch.equal(first, again), cache.stored("gradcam")
    (True, 2)
    """

    def __init__(self, model: nn.Module, *, layer: str | Mapping[str, str] | None = None,
                 explain_options: Mapping[str, Any] | None = None):
        self.model = check_module(model)
        self.layer = layer
        self.options = dict(explain_options or {})
        self._logits = _KeyedStore()
        self._maps: dict[str, _KeyedStore] = {}

    def logits(self, image_index: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The model's logits of the images with dataset indices ``image_index``."""
        with torch.no_grad():
            return self._logits.get(image_index.long(), lambda missing: self.model(images[missing]))

    def maps(self, method: str, image_index: torch.Tensor, images: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The model's ``method`` maps of ``pairs`` (image position in ``images``, class)."""
        store = self._maps.setdefault(method, _KeyedStore())
        keys = pair_keys(image_index[pairs[:, 0]], pairs[:, 1])

        def compute(missing: torch.Tensor) -> torch.Tensor:
            return attribution.explain(self.model, images, pairs[missing], method=method, layer=self.layer_of(method),
                                       **self.options)

        return store.get(keys, compute)

    def layer_of(self, method: str) -> str | None:
        """The layer the cache's ``method`` maps explain (``None``: the method's default)."""
        return self.layer.get(method) if isinstance(self.layer, Mapping) else self.layer

    def stored(self, method: str) -> int:
        """How many (image, class) maps of ``method`` the cache holds."""
        return len(self._maps.get(method, _KeyedStore()))
