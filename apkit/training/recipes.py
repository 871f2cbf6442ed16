"""Named training recipes: the paper's optimisation schedules (METHOD §5) and apkit's synthetic defaults.

A :class:`Recipe` holds the optimiser and schedule settings of :func:`apkit.training.fit`;
``fit(model, data, **RECIPES.get("teacher").kwargs())`` trains with them, and
``dataclasses.replace(recipe, epochs=5)`` changes one value.

Examples
--------
>>> recipe = RECIPES.get("kd")
>>> recipe.epochs, recipe.lr, recipe.milestones
(350, 0.1, (150, 200, 250))
>>> sorted(recipe.kwargs())
['batch_size', 'epochs', 'gamma', 'lr', 'milestones', 'momentum', 'schedule', 'weight_decay']
"""

from __future__ import annotations

from dataclasses import dataclass

from apkit.core.registry import Registry

__all__ = ["RECIPES", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """SGD settings and learning-rate schedule of one training run.

    ``schedule`` is ``"step"`` (multiply the rate by ``gamma`` at each epoch in ``milestones``;
    no milestones means a constant rate) or ``"cosine"`` (cosine decay to 0 over ``epochs``).
    """

    epochs: int
    lr: float
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    schedule: str = "step"

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`apkit.training.fit` this recipe sets."""
        return {
            "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "milestones": tuple(self.milestones), "gamma": self.gamma,
            "schedule": self.schedule,
        }


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
