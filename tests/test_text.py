"""The product-name branch: names read without images, text encoders, the class-word check."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fewshot.data.dataset import FashionProducts
from fewshot.data.protocols import TransferProtocol
from fewshot.evaluation import per_class_topk
from fewshot.methods import NearestCentroid, TauNorm, TextHead
from fewshot.text import TfidfEncoder, get_encoder, mentions_class, mentions_own_class
from fewshot.text.class_words import class_variants
from fewshot.utils.errors import UserError
from tests.conftest import style_row

pytest.importorskip("sklearn")


@pytest.mark.parametrize("name, cls, expected", [
    ("Levis Men Navy Blue Jeans", "Jeans", True),
    ("Puma Men Black Casual Shoe", "Casual Shoes", True),
    ("Nike Women Pink Casual Shoes", "Casual Shoes", True),
    ("Fossil Women Silver Watch", "Watches", True),
    ("Lakme Absolute Lip Gloss", "Lip Gloss", True),
    ("Nike Men Blue Tshirt", "Tshirts", True),
    ("Puma Men Ferrari Scuderia", "Tshirts", False),
    ("Jeans-Look Men Shorts", "Jeans", True),   # punctuation separates words
    ("Men Jeansy Shorts", "Jeans", False),      # whole words only
    ("Reebok Men Shoe", "Casual Shoes", False),  # every word of the class name
    ("", "Jeans", False),
    (None, "Jeans", False),
])
def test_mentions_class_matches_whole_words_and_simple_plurals(name, cls, expected):
    assert mentions_class(name, cls) is expected


def test_class_variants_cover_singular_and_plural_of_the_last_word():
    assert {"casual shoe", "casual shoes"} <= set(class_variants("Casual Shoes"))
    assert {"watch", "watches"} <= set(class_variants("Watches"))


def test_mentions_own_class_checks_each_item_against_its_own_class():
    got = mentions_own_class(["A Blue Jeans", "A Red Watch", ""], ["Jeans", "Jeans", "Watches"])
    assert got.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="2 names for 1"):
        mentions_own_class(["a", "b"], ["Jeans"])


def test_dataset_exposes_names_without_decoding_images_and_empty_names_as_empty_strings(make_layout):
    root = make_layout([style_row(1, "Jeans", name="Levis Men Jeans"), style_row(2, "Watches", name=""),
                        style_row(3, "Watches", name="Titan, Men Watch")], missing=())
    ds = FashionProducts(root)
    assert ds.images is None
    assert ds.names == ["Levis Men Jeans", "", "Titan, Men Watch"]


def test_synthetic_names_mix_class_words_line_words_and_empty_names(synthetic_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = FashionProducts(synthetic_root)
    classes = [ds.classes[i] for i in ds.labels]
    empty = np.array([n == "" for n in ds.names])
    with_word = mentions_own_class(ds.names, classes)
    n = len(ds)
    assert 0.02 * n < empty.sum() < 0.10 * n
    assert 0.60 * n < with_word.sum() < 0.80 * n
    assert 0.15 * n < (~with_word & ~empty).sum() < 0.35 * n


def test_tfidf_encodes_empty_and_unknown_names_as_zero_rows_and_is_deterministic():
    train = ["Levis Men Blue Jeans", "Titan Men Watch", "Nike Women Shoes", None, ""]
    enc = TfidfEncoder(max_features=64).fit(train)
    x = enc.transform(["Levis Jeans", "", None, "qqqq"])
    assert x.shape == (4, enc.dim) and x.dtype == torch.float32
    assert x[0].abs().sum() > 0
    assert torch.all(x[1:3] == 0)
    assert torch.all(x[3] == 0)  # no known word or character n-gram
    again = TfidfEncoder(max_features=64).fit(train).transform(["Levis Jeans", "", None, "qqqq"])
    assert torch.equal(x, again)


def test_encoders_encode_each_distinct_name_once_and_give_repeats_the_same_row():
    class Counting(TfidfEncoder):
        seen: list[list[str]] = []

        def _encode(self, names: list[str]) -> torch.Tensor:
            self.seen.append(list(names))
            return super()._encode(names)

    enc = Counting(max_features=64).fit(["Levis Men Blue Jeans", "Titan Men Watch", "Nike Women Shoes"])
    names = ["Titan Men Watch", "Levis Jeans", " Titan Men Watch", "", "Levis Jeans", None, "Nike Women Shoes"]
    x = enc.transform(names)
    assert enc.seen == [["Titan Men Watch", "Levis Jeans", "Nike Women Shoes"]]
    one_by_one = torch.cat([TfidfEncoder(max_features=64).fit(["Levis Men Blue Jeans", "Titan Men Watch",
                                                               "Nike Women Shoes"]).transform([n]) for n in names])
    assert torch.equal(x, one_by_one)
    assert torch.equal(x[0], x[2]) and torch.all(x[[3, 5]] == 0)


def test_tfidf_refuses_train_names_that_are_all_empty():
    with pytest.raises(UserError, match="no train image has a product name"):
        TfidfEncoder().fit(["", None, "  "])


@pytest.mark.parametrize("name, message", [("word2vec", "unknown text encoder 'word2vec'; known: tfidf, minilm")])
def test_get_encoder_names_the_known_encoders(name, message):
    with pytest.raises(UserError, match=message):
        get_encoder(name)


def test_text_head_abstains_with_uniform_scores_on_empty_names():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    y = torch.tensor([0, 1, 0, 1])
    head = TextHead(NearestCentroid()).fit(x, y)
    scores = head.scores(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert scores[0].argmax() == 0
    assert torch.all(scores[1] == 0)


@pytest.mark.parametrize("head", ["centroid", "tau_norm"])
def test_a_text_classifier_on_synthetic_names_beats_chance_by_far(synthetic_root, head):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = FashionProducts(synthetic_root)
    p = TransferProtocol.from_styles(ds.styles, n_head=4)
    names = np.array(ds.names, dtype=object)
    enc = TfidfEncoder(max_features=512).fit(names[p.all_train])
    clf = TextHead(NearestCentroid(normalize="l2n", distance="cosine") if head == "centroid"
                   else TauNorm(epochs=5, min_steps=50, seed=0))
    clf.fit(enc.transform(names[p.tail_train]), torch.from_numpy(p.targets(p.tail_train, "tail")))
    y_test = torch.from_numpy(p.targets(p.tail_test, "tail"))
    result = per_class_topk(clf.scores(enc.transform(names[p.tail_test])), y_test)
    chance = 1 / len(p.tail)
    assert result.micro["top1"] > 0.6 > 3 * chance
