"""The one definition of the metrics every number in emosweep is made of.

WA (weighted accuracy) = overall accuracy. UA (unweighted accuracy) = mean of
the per-class recalls (balanced accuracy), over the classes present in the
reference labels. Macro-F1 averages per-class F1 over the same classes.
"""
from __future__ import annotations

import numpy as np

# Every table column, tracker key and figure names its metrics from these lists, never by spelling them anew.
SCORES = ("wa", "ua", "macro_f1")                 # one number per split, from classification_metrics
PER_CLASS = ("recall", "support", "confusion")    # lists per split, from classification_metrics
REPORTED = (*SCORES, "loss")                      # per split and epoch: the scores and the mean cross-entropy
ORACLE = ("wa", "ua")                             # the test-oracle columns some papers report


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def classification_metrics(labels, predictions, num_classes: int) -> dict:
    matrix = confusion_matrix(labels, predictions, num_classes)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    correct = np.diag(matrix)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros(num_classes), where=present)
    precision = np.divide(correct, predicted, out=np.zeros(num_classes), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    total = int(support.sum())
    return {
        "wa": float(correct.sum() / total) if total else float("nan"),
        "ua": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "recall": recall.tolist(),
        "support": support.tolist(),
        "confusion": matrix.tolist(),
    }
