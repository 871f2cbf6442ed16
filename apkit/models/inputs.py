"""The input a model was trained on (image size, normalisation), as its files record it.

``apkit train`` records ``image_size``, ``mean`` and ``std`` in the meta of ``model.pt``;
``apkit compress`` records them under ``"input"`` in ``record.json`` (and in the meta of its
``model.pt``), taken from the data the teacher was compressed on.  :func:`recorded_input` reads
them back for any model spec, so that a compressed run is audited at its teacher's size by
default.

Examples
--------
>>> import json, tempfile
>>> from pathlib import Path
>>> run = Path(tempfile.mkdtemp())
>>> _ = (run / "record.json").write_text(json.dumps({"input": {"image_size": 64, "mean": [0.5] * 3}}))
>>> recorded_input(f"torchvision:resnet18={run / 'model_state.pt'}")
{'image_size': 64, 'mean': [0.5, 0.5, 0.5]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apkit.core.errors import ApkitError
from apkit.models.checkpoint import read_checkpoint
from apkit.models.resolve import parse_model_spec

__all__ = ["INPUT_KEYS", "RECORD_FILE", "recorded_input"]

#: What is recorded of a model's input.
INPUT_KEYS = ("image_size", "mean", "std")
#: The file ``apkit compress`` writes beside its model.
RECORD_FILE = "record.json"


def _pick(values: Any) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        return {}
    return {k: values[k] for k in INPUT_KEYS if values.get(k) not in (None, [], ())}


def _from_checkpoint(path: Path) -> dict[str, Any]:
    try:
        meta = read_checkpoint(path).get("meta") or {}
    except ApkitError:
        return {}
    return {**_pick(meta), **_pick(meta.get("input"))}


def _from_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _pick(record.get("input")) if isinstance(record, Mapping) else {}


def recorded_input(spec: str | os.PathLike) -> dict[str, Any]:
    """The ``image_size``, ``mean`` and ``std`` recorded for the model a spec names (those found).

    Looked up, in order: the meta of an apkit checkpoint (``PATH``), then ``record.json`` in the
    folder of the weights file (what ``apkit compress`` writes).  A value found nowhere is left
    out, so the data's default applies; nothing is loaded but small files and checkpoint metadata.

    Parameters
    ----------
    spec : str or path-like
        A model spec (:func:`apkit.models.resolve_model`): ``PATH`` or ``ARCH=PATH``.

    Returns
    -------
    dict
        A subset of ``{"image_size": int, "mean": [r, g, b], "std": [r, g, b]}``.
    """
    parsed = parse_model_spec(spec)
    path = Path(parsed.path)
    found = _from_record(path.parent)
    if parsed.arch is None and path.is_file():
        found = {**found, **_from_checkpoint(path)}
    if "image_size" in found:
        found["image_size"] = int(found["image_size"])
    return found
