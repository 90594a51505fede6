"""The common evaluator: per-class top-k, Many/Medium/Few buckets, episodic accuracy with CIs."""
from __future__ import annotations

from fewshot.evaluation.bootstrap import (
    BootstrapDraws,
    bootstrap_accuracy,
    percentile_interval,
    resample_indices,
    topk_hits,
)
from fewshot.evaluation.buckets import BUCKETS, assign_buckets, bucket_means
from fewshot.evaluation.episodic import EpisodicResult, episodic_class_accuracy, episodic_eval, prototype_accuracy
from fewshot.evaluation.functional import episodic_accuracy, per_class_topk, target_ranks, top1_accuracy, topk_counts
from fewshot.evaluation.generic import evaluate_episodes
from fewshot.evaluation.metrics import Metric, TopKAccuracy
from fewshot.evaluation.ranking import (
    RankingResult,
    average_ranks,
    critical_difference,
    draw_cd_diagram,
    friedman_nemenyi,
)
from fewshot.evaluation.result import TopKResult
from fewshot.methods.functional import DISTANCES, NORMALIZATIONS, normalize_features

__all__ = [
    "BUCKETS",
    "DISTANCES",
    "NORMALIZATIONS",
    "BootstrapDraws",
    "EpisodicResult",
    "Metric",
    "RankingResult",
    "TopKAccuracy",
    "TopKResult",
    "assign_buckets",
    "average_ranks",
    "bootstrap_accuracy",
    "bucket_means",
    "critical_difference",
    "draw_cd_diagram",
    "episodic_accuracy",
    "episodic_class_accuracy",
    "episodic_eval",
    "evaluate_episodes",
    "friedman_nemenyi",
    "normalize_features",
    "per_class_topk",
    "percentile_interval",
    "prototype_accuracy",
    "resample_indices",
    "target_ranks",
    "top1_accuracy",
    "topk_counts",
    "topk_hits",
]
