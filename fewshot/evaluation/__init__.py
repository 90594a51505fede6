"""The common evaluator: per-class top-k, Many/Medium/Few buckets, episodic accuracy with CIs."""
from __future__ import annotations

from fewshot.evaluation.buckets import BUCKETS, assign_buckets, bucket_means
from fewshot.evaluation.episodic import EpisodicResult, episodic_class_accuracy, episodic_eval
from fewshot.evaluation.functional import episodic_accuracy, per_class_topk, target_ranks, topk_counts
from fewshot.evaluation.metrics import Metric, TopKAccuracy
from fewshot.evaluation.prototypes import DISTANCES, NORMALIZATIONS, normalize_features, prototype_accuracy
from fewshot.evaluation.result import TopKResult

__all__ = [
    "BUCKETS", "DISTANCES", "NORMALIZATIONS", "EpisodicResult", "Metric", "episodic_class_accuracy", "TopKAccuracy", "TopKResult",
    "assign_buckets", "bucket_means", "episodic_accuracy", "episodic_eval", "normalize_features", "per_class_topk",
    "prototype_accuracy", "target_ranks", "topk_counts",
]
