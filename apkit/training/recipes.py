"""Training recipes: the optimiser and schedule settings of one training run, and the named ones.

A :class:`Recipe` is the one place where each training setting is declared: its name, its default
and its check.  :func:`apkit.training.fit` takes one; :data:`RECIPES` holds the paper's
optimisation schedules (METHOD §5) and apkit's synthetic defaults; ``recipe.replace(epochs=5)``
changes one value (checked like the others).

Examples
--------
>>> recipe = RECIPES.get("kd")
>>> recipe.epochs, recipe.lr, recipe.milestones
(350, 0.1, (150, 200, 250))
>>> sorted(recipe.to_dict())
['batch_size', 'epochs', 'gamma', 'lr', 'milestones', 'momentum', 'optimizer', 'schedule', 'weight_decay']
>>> recipe.replace(optimizer="adamw", lr=1e-3).optimizer
'adamw'
>>> Recipe(epochs=0, lr=0.1)
Traceback (most recent call last):
...
apkit.core.errors.ValidationError: epochs must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apkit.core.errors import ValidationError
from apkit.core.names import SCHEDULE_NAMES
from apkit.core.registry import Registry
from apkit.core.validation import check_choice, check_float, check_int, check_known

__all__ = ["OPTIMIZER_NAMES", "RECIPES", "Recipe"]

#: The optimisers a recipe may name: SGD with momentum (the paper's) and AdamW.
OPTIMIZER_NAMES = ("sgd", "adamw")


def _check_milestones(milestones: object) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise ValidationError(f"milestones must be a sequence of epochs, got {milestones!r}")
    values = tuple(check_int(m, "each milestone", minimum=1) for m in milestones)
    if list(values) != sorted(set(values)):
        raise ValidationError(f"milestones must be strictly increasing, got {list(values)}")
    return values


@dataclass(frozen=True)
class Recipe:
    """Optimiser settings and learning-rate schedule of one training run, checked when it is made.

    Attributes
    ----------
    epochs : int
        Total number of epochs (at least 1).
    lr : float
        Initial learning rate (> 0).
    batch_size : int
        Images per optimiser step, over all processes under torchrun.
    momentum, weight_decay : float
        SGD momentum (in [0, 1); unused by AdamW) and weight decay (>= 0; AdamW's decoupled decay).
    milestones : tuple of int
        ``schedule="step"``: the epochs after which the rate is multiplied by ``gamma``
        (strictly increasing; none means a constant rate).
    gamma : float
        Step-schedule factor, in (0, 1].
    schedule : {"step", "cosine"}
        ``"cosine"`` decays the rate to 0 over ``epochs``.
    optimizer : {"sgd", "adamw"}
        ``torch.optim.SGD`` with ``momentum``, or ``torch.optim.AdamW`` (its default betas and eps).

    Raises
    ------
    apkit.core.errors.ValidationError
        A value out of range, named with its requirement.
    """

    # The help of each field is the command line's (`apkit train --epochs ...`), which is made from these fields.
    epochs: int = field(metadata={"help": "Epochs"})
    lr: float = field(metadata={"help": "Initial learning rate"})
    batch_size: int = field(default=64, metadata={"help": "Images per optimiser step"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    milestones: tuple[int, ...] = field(
        default=(), metadata={"help": "Epochs after which a step schedule multiplies the rate by --gamma; '' for none"})
    gamma: float = field(default=0.1, metadata={"help": "Step-schedule factor"})
    schedule: str = field(default="step", metadata={
        "help": "Learning-rate schedule: step (x gamma at each milestone) or cosine", "choices": SCHEDULE_NAMES})
    optimizer: str = field(default="sgd", metadata={
        "help": "Optimiser: sgd (with --momentum) or adamw", "choices": OPTIMIZER_NAMES})

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_float(self.momentum, "momentum", minimum=0.0, maximum=1.0, exclusive_maximum=True)
        check_float(self.weight_decay, "weight_decay", minimum=0.0)
        object.__setattr__(self, "milestones", _check_milestones(self.milestones))  # a list becomes a tuple
        check_float(self.gamma, "gamma", minimum=0.0, maximum=1.0, exclusive_minimum=True)
        check_choice(self.schedule, "schedule", SCHEDULE_NAMES)
        check_choice(self.optimizer, "optimizer", OPTIMIZER_NAMES)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the training settings, in their declared order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        """The recipe of ``values`` (``{"epochs": 10, "lr": 0.01, ...}``); an unknown key is refused.

        Examples
        --------
        >>> Recipe.from_dict({"epochs": 2, "lr": 0.1, "milestones": [1]}).milestones
        (1,)
        """
        if not isinstance(values, Mapping):
            raise ValidationError(f"training settings must be a mapping such as {{'epochs': 10, 'lr': 0.01}}, "
                                  f"got {type(values).__name__}")
        check_known(values, "training setting", cls.field_names())
        missing = [name for name in ("epochs", "lr") if name not in values]
        if missing:
            raise ValidationError(f"training settings lack {', '.join(missing)}; give at least 'epochs' and 'lr'")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (``milestones`` as a list)."""
        return {**dataclasses.asdict(self), "milestones": list(self.milestones)}

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (checked as a new recipe); an unknown setting is refused."""
        return Recipe.from_dict({**dataclasses.asdict(self), **changes})


RECIPES: Registry = Registry("training recipe")

RECIPES.register(
    "teacher", Recipe(60, 0.1, 64, milestones=(10, 30, 40)),
    help="paper's teacher (reference code, ImageNet-initialised VGG16-BN): 60 epochs, lr 0.1 x0.1 at 10/30/40, "
         "wd 1e-4, batch 64",
)
RECIPES.register(
    "teacher-supp", Recipe(250, 0.1, 128, weight_decay=5e-4),
    help="paper's teacher per the supplement: 250 epochs, lr 0.1, wd 5e-4, batch 128 "
         "(the supplement states no decay, so the rate stays constant)",
)
RECIPES.register(
    "kd", Recipe(350, 0.1, 64, milestones=(150, 200, 250)),
    help="paper's distillation: 350 epochs, lr 0.1 x0.1 at 150/200/250, momentum 0.9 (supplement), wd 1e-4, "
         "batch 64",
)
RECIPES.register(
    "kd-code", Recipe(350, 0.1, 64, momentum=0.0, milestones=(150, 200, 250)),
    help="distillation as the reference code runs it: as 'kd' but without momentum",
)
RECIPES.register(
    "finetune-structured", Recipe(60, 1e-3, 64),
    help="paper's fine-tuning after structured pruning: 60 epochs, constant lr 1e-3, momentum 0.9, wd 1e-4, "
         "batch 64",
)
RECIPES.register(
    "finetune-unstructured", Recipe(30, 1e-3, 64),
    help="paper's fine-tuning per unstructured pruning step: 30 epochs, constant lr 1e-3, momentum 0.9, "
         "wd 1e-4, batch 64",
)
# 12 epochs converge (validation per-class mAP 0.998 at 48x48); after 8 the teacher was still
# climbing, at 0.90 or 0.95 depending on the number of CPU threads.
RECIPES.register(
    "synthetic", Recipe(12, 0.05, 64, weight_decay=5e-4, schedule="cosine"),
    help="teacher on the embedded synthetic data: 12 epochs, lr 0.05 cosine, wd 5e-4, batch 64; about 3 minutes "
         "at 64x64 on a 2-core CPU",
)
