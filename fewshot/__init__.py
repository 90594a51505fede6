"""fewshot: benchmark few-shot learning methods on the rare classes of a long-tailed catalogue."""
from __future__ import annotations

from fewshot.sampling import (
    Episode,
    EpisodeCollate,
    EpisodeSampler,
    VariableEpisode,
    VariableEpisodeSampler,
    collate_episode,
)

__all__ = [
    "Episode", "EpisodeCollate", "EpisodeSampler", "VariableEpisode", "VariableEpisodeSampler", "collate_episode",
]
