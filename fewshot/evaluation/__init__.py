"""The common evaluator: per-class top-k, Many/Medium/Few buckets, episodic accuracy with CIs."""
from __future__ import annotations

from fewshot.evaluation.buckets import BUCKETS, assign_buckets, bucket_means
from fewshot.evaluation.episodic import EpisodicResult, episodic_class_accuracy, episodic_eval, prototype_accuracy
from fewshot.evaluation.functional import episodic_accuracy, per_class_topk, target_ranks, top1_accuracy, topk_counts
from fewshot.evaluation.generic import evaluate_episodes
from fewshot.evaluation.metrics import Metric, TopKAccuracy
from fewshot.evaluation.result import TopKResult
from fewshot.methods.functional import DISTANCES, NORMALIZATIONS, normalize_features

__all__ = [
    "BUCKETS",
    "DISTANCES",
    "NORMALIZATIONS",
    "EpisodicResult",
    "Metric",
    "TopKAccuracy",
    "TopKResult",
    "assign_buckets",
    "bucket_means",
    "episodic_accuracy",
    "episodic_class_accuracy",
    "episodic_eval",
    "evaluate_episodes",
    "normalize_features",
    "per_class_topk",
    "prototype_accuracy",
    "target_ranks",
    "top1_accuracy",
    "topk_counts",
]
