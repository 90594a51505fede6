"""Product names as features: text encoders fitted on train names, and the class-word check.

The text branch reads ``productDisplayName`` (a dataset's ``names``) and turns it into a feature tensor
[n, d] that the feature-based methods of :mod:`fewshot.methods` take unchanged. An empty name (or one
with nothing the encoder knows) encodes to the zero vector: the text branch's "no evidence".
"""
from fewshot.text.class_words import mentions_class, mentions_own_class
from fewshot.text.encoders import ENCODERS, TextEncoder, TfidfEncoder, get_encoder

__all__ = ["ENCODERS", "TextEncoder", "TfidfEncoder", "get_encoder", "mentions_class", "mentions_own_class"]
