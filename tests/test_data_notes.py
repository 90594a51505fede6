"""summary.md's account of the data, written from run.json alone: the protocols' rules in words, the settings
fitted to the data, the items left out, and the reference figures only beside the Kaggle catalogue."""
from __future__ import annotations

import pytest

from benchmarks.reports.data_notes import data_lines, is_kaggle_catalogue
from fewshot.data.protocols import shipped_classes
from fewshot.data.rules import KAGGLE_SPLIT, ClassSplit, SplitRule
from fewshot.data.validation import ValidationRule

KAGGLE = {"layout": "kaggle", "transfer_split": KAGGLE_SPLIT.to_dict(), "episodic_classes": shipped_classes().to_dict()}


@pytest.mark.parametrize(("dataset", "kaggle"), [
    ({}, True),  # a run.json from before layouts were recorded: the Kaggle catalogue, the only one read then
    (KAGGLE, True),  # the real catalogue, or a synthetic one in its layout (marked SYNTHETIC)
    ({**KAGGLE, "layout": "imagefolder"}, False),
    ({**KAGGLE, "layout": "manifest"}, False),
    ({**KAGGLE, "transfer_split": SplitRule.stratified(0.25, 0).to_dict()}, False),  # the catalogue, another split
    ({**KAGGLE, "episodic_classes": ClassSplit.fraction(0.6, 0).to_dict()}, False),
])
def test_reference_figures_belong_to_the_kaggle_catalogue_with_its_own_protocols(dataset, kaggle):
    assert is_kaggle_catalogue({"dataset": dataset}) is kaggle


RULE = ValidationRule("group", ("year", "season"))


@pytest.mark.parametrize(("validation", "words"), [
    (None, None),
    ({"rule": "group", "words": RULE.describe(share=False)}, "group: whole (year, season) groups held out, per "
                                                            "class, pixel-identical copies on one side"),
])
def test_the_episodic_class_split_and_the_validation_rule_are_said_in_words(validation, words):
    run = {"dataset": {"episodic_classes": ClassSplit.fraction(0.6, 0).to_dict()},
           **({"validation": validation} if validation is not None else {})}
    text = "\n".join(data_lines({"episodic_split": {"train_classes": ["a", "b"], "val_classes": ["c"]}}, run))
    assert ("Episodic protocol: seeded split of the classes with >= min_images images: 0.6 of them to background, "
            "the rest to evaluation (seed 0); background classes: 2 to train on, 1 held out whole") in text
    assert (f"Validation images (carved from train): {words}." in text) if words else "Validation" not in text


def test_fitted_settings_and_left_out_items_get_a_section_each_only_when_there_are_any():
    assert data_lines({}, {"dataset": {"left_out": []}, "fitted": []}) == []
    run = {"fitted": [{"key": "evaluation.ways", "from": [2, 5], "to": [2, 4], "why": "4 evaluation classes"},
                      {"key": "evaluation.n_query", "from": 15, "to": 9, "why": "4 evaluation classes"},
                      {"key": "methods", "from": ["a", "text"], "to": ["a"], "why": "no names"}],
           "dataset": {"left_out": [{"reason": "corrupt images (cannot be decoded)", "count": 4,
                                     "line": "4 corrupt images (cannot be decoded): a.png, b.png, c.png and 1 more",
                                     "items": ["a.png", "b.png", "c.png", "d.png"]}]}}
    text = "\n".join(data_lines({}, run))
    assert ("- `evaluation.ways [2, 5] -> [2, 4]`; `evaluation.n_query 15 -> 9`: 4 evaluation classes\n"
            "- `methods: left out text`: no names") in text
    assert "## Left out of the data" in text and "- 4 corrupt images (cannot be decoded): a.png, b.png, c.png and 1 " \
                                                "more" in text
