"""Episodic samplers: fixed N-way K-shot episodes, Meta-Dataset's variable ones, and their collate."""
from __future__ import annotations

from fewshot.sampling.base import BaseEpisodeSampler
from fewshot.sampling.episode import Episode, EpisodeCollate, collate_episode
from fewshot.sampling.fixed import EpisodeSampler
from fewshot.sampling.variable import VariableEpisode, VariableEpisodeSampler

__all__ = [
    "Episode", "EpisodeCollate", "EpisodeSampler", "BaseEpisodeSampler", "VariableEpisode", "VariableEpisodeSampler",
    "collate_episode",
]
