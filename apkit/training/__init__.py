"""Training: one SGD loop for teachers, distillation and fine-tuning, and the classification evaluation.

* :func:`fit` trains with any ``objective(model, images, labels) -> (loss, logits)`` (the task
  loss by default), keeps the best validation epoch, checkpoints every epoch, resumes exactly,
  and runs under ``torchrun``.
* :func:`evaluate` returns the paper's predictive metrics (per-image "mAP", per-class mAP, F1;
  top-1 for single-label data).
* :data:`RECIPES` holds the paper's optimisation schedules and apkit's synthetic defaults.

Examples
--------
>>> from apkit.training import RECIPES, fit
>>> RECIPES.get("teacher").kwargs()["milestones"]
(10, 30, 40)
"""

from apkit.training.distributed import all_reduce_sum, is_distributed, is_main_process, world_info
from apkit.training.loop import CHECKPOINT_NAME, METRIC_NAMES, FitResult, evaluate, fit, seed_everything
from apkit.training.objectives import TASKS, TaskObjective, class_targets, task_loss
from apkit.training.recipes import RECIPES, Recipe

__all__ = [
    "CHECKPOINT_NAME", "METRIC_NAMES", "RECIPES", "TASKS", "FitResult", "Recipe", "TaskObjective", "all_reduce_sum",
    "class_targets", "evaluate", "fit", "is_distributed", "is_main_process", "seed_everything", "task_loss",
    "world_info",
]
