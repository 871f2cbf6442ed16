"""Training: one SGD loop for teachers, distillation and fine-tuning, and the classification evaluation.

* :func:`fit` trains with any ``objective(model, images, labels) -> (loss, logits)`` (the task
  loss by default), keeps the best validation epoch, checkpoints every epoch, resumes exactly,
  and runs under ``torchrun``.
* :func:`evaluate` returns the paper's predictive metrics (per-image "mAP", per-class mAP, F1;
  top-1 for single-label data).
* :data:`RECIPES` holds the paper's optimisation schedules and apkit's synthetic defaults.
* :func:`train_model` trains a registered model on a dataset spec (``apkit train``);
  :func:`datasets_for` builds the data a trained model is compressed or audited on.

Examples
--------
>>> from apkit.training import RECIPES, fit
>>> RECIPES.get("teacher").milestones
(10, 30, 40)
"""

from apkit.training.evaluate import (
    METRIC_NAMES,
    classification_metrics,
    evaluate,
    num_classes_of,
    predict,
    resolve_task,
)
from apkit.training.loop import FitOptions, FitResult, fit, seed_everything
from apkit.training.objectives import TaskObjective, class_targets, task_loss
from apkit.training.pipeline import TrainingReport, datasets_for, train_model
from apkit.training.recipes import RECIPES, Recipe
from apkit.training.state import CHECKPOINT_NAME

__all__ = [
    "CHECKPOINT_NAME", "METRIC_NAMES", "RECIPES", "FitOptions", "FitResult", "Recipe", "TaskObjective",
    "TrainingReport", "classification_metrics", "num_classes_of", "resolve_task",
    "class_targets", "datasets_for", "evaluate", "fit", "predict", "seed_everything", "task_loss", "train_model",
]
