from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot.data.split import stratified_split
from fewshot.evaluation import top1_accuracy
from fewshot.images.augment import AugmentConfig, eval_transform
from fewshot.images.inference import extract_features, predict_scores
from fewshot.images.store import ImageStore
from fewshot.models.backbones import Conv4, create_backbone
from fewshot.models.classifier import Classifier
from fewshot.training.loop import Objective, TrainConfig, fit
from fewshot.training.optim import build_optimizer, build_scheduler, warmup_cosine
from fewshot.training.supervised import SupervisedObjective

TINY = TrainConfig(epochs=3, batch_size=16, lr=0.05, warmup_epochs=0.5, val_fraction=0.25, device="cpu",
                   eval_batch_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 64, size: int = 32, n_classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random images whose class shows as a colour cast: class c brightens channel c % 3."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    images = rng.integers(0, 120, (n, size, size, 3))
    images[np.arange(n), :, :, labels % 3] += 120
    return images.astype(np.uint8), labels


def _conv4(seed: int = 0) -> Conv4:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Conv4(width=16)


def _linear(n_in: int = 4, n_out: int = 2, seed: int = 0) -> torch.nn.Linear:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Linear(n_in, n_out)


def _model(n_classes: int = 2, seed: int = 0, **kwargs) -> Classifier:
    return Classifier(_conv4(seed), n_classes, seed=seed, **kwargs)


def _run(config: TrainConfig = TINY, out_dir=None, data=None, **kwargs):
    images, labels = data if data is not None else _images()
    model = _model(int(labels.max()) + 1)
    objective = SupervisedObjective(images, labels, np.arange(len(labels)), config)
    result = fit(model, objective, config, out_dir, progress=False, **kwargs)
    return model, result


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "train_seconds", "seconds")} for row in history]


# ---- schedule and optimiser ---------------------------------------------------------------------------

@pytest.mark.parametrize("total,warmup", [(10, 0), (10, 3), (7, 7), (1, 0)])
def test_warmup_cosine_rises_linearly_then_follows_the_cosine(total, warmup):
    values = [warmup_cosine(s, total, warmup) for s in range(total)]
    for s, v in enumerate(values):
        cosine = 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        expected = (s + 1) / warmup if s < warmup else cosine
        assert v == pytest.approx(expected)
    assert max(values) <= 1.0 and all(b <= a + 1e-12 for a, b in zip(values[warmup:], values[warmup + 1:]))


def test_scheduler_sets_the_learning_rate_of_every_step():
    model = _linear(3, 2)
    opt = build_optimizer(model, "sgd", lr=0.4)
    sched = build_scheduler(opt, total_steps=6, warmup_steps=2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.4 * warmup_cosine(s, 6, 2) for s in range(6)])


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_weight_decay_skips_biases_and_norm_scales(name, cls):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, name, lr=0.1, weight_decay=0.01)
    assert isinstance(opt, cls)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_unknown_optimizer_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: sgd, adamw"):
        build_optimizer(_linear(2, 2), "lion", lr=0.1)


# ---- validation split ----------------------------------------------------------------------------------

@pytest.mark.parametrize("counts,fraction", [([10, 20, 1, 2, 3], 0.2), ([100, 7], 0.1), ([1, 1, 1], 0.5), ([50], 0.3)])
def test_stratified_split_is_disjoint_and_per_class_proportional(counts, fraction):
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(len(counts)), counts))
    train, val = stratified_split(labels, fraction, seed=0)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    for c, n in enumerate(counts):
        n_val = int((labels[val] == c).sum())
        assert n_val == (0 if n == 1 else min(n - 1, max(1, int(np.floor(fraction * n + 0.5)))))
        assert (labels[train] == c).sum() >= 1


def test_stratified_split_is_seeded():
    labels = np.repeat(np.arange(4), 25)
    a, b, c = (stratified_split(labels, 0.2, seed=s)[1] for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_stratified_split_over_given_indices_returns_dataset_indices():
    labels = np.repeat(np.arange(3), 10)
    pool = np.arange(0, 30, 2)
    train, val = stratified_split(labels, 0.4, seed=0, indices=pool)
    assert set(train) | set(val) == set(pool) and not set(train) & set(val)
    assert sorted(np.bincount(labels[val], minlength=3)) == [2, 2, 2]


def test_zero_validation_fraction_keeps_everything_in_train():
    train, val = stratified_split(np.arange(10) % 2, 0.0, seed=0)
    assert train.tolist() == list(range(10)) and val.size == 0


# ---- image store and inference -------------------------------------------------------------------------

def test_image_store_copies_a_memmap_subset_and_addresses_it_by_dataset_index(tmp_path):
    images, _ = _images(20, 8)
    mm = np.lib.format.open_memmap(tmp_path / "cache.npy", mode="w+", dtype=np.uint8, shape=images.shape)
    mm[:] = images
    store = ImageStore(mm, [17, 3, 9, 3])
    assert len(store) == 3 and store.data.dtype == torch.uint8
    rows = store.rows([9, 17, 3])
    assert torch.equal(store.data[rows], torch.from_numpy(images[[9, 17, 3]]))
    assert torch.equal(store.load(rows), eval_transform(torch.from_numpy(images[[9, 17, 3]])))
    with pytest.raises(KeyError, match=r"\[4\]"):
        store.rows([4])


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_predict_and_extract_equal_a_direct_eval_forward_and_restore_the_mode(batch_size):
    images, _ = _images(10, 16)
    model = _model(3).train()
    idx = np.array([7, 0, 3, 3, 9])
    scores = predict_scores(model, images, idx, batch_size=batch_size, progress=False)
    feats = extract_features(model.backbone, ImageStore(images, idx), idx, batch_size=batch_size, progress=False)
    assert model.training and model.backbone.training
    model.eval()
    with torch.no_grad():
        x = eval_transform(torch.from_numpy(images[idx]))
        torch.testing.assert_close(scores, model(x))
        torch.testing.assert_close(feats, model.backbone(x))


@pytest.mark.parametrize("kind,expected", [("micro", 4 / 6), ("macro", (1 / 3 + 1 + 1) / 3)])
def test_accuracy_micro_and_macro_against_hand_counts(kind, expected):
    targets = torch.tensor([0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 2])
    assert top1_accuracy(F.one_hot(preds, 3).float(), targets, kind) == pytest.approx(expected)


def _argmax_accuracy(scores: torch.Tensor, targets: torch.Tensor, kind: str) -> float:
    """Reference: argmax hits, per-class fractions via unique/index_add, averaged by torch in float64."""
    hit = (scores.argmax(1) == targets).double()
    if kind == "micro":
        return float(hit.mean())
    classes, inverse = torch.unique(targets, return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, hit)
    return float((per_class / torch.bincount(inverse).double()).mean())


@pytest.mark.parametrize("kind", ["macro", "micro"])
@pytest.mark.parametrize("scores_kind", ["continuous", "ties", "half", "nan"])
@pytest.mark.parametrize("seed", range(4))
def test_validation_accuracy_is_bit_identical_to_argmax_accuracy(kind, scores_kind, seed):
    # The trainer picks its best epoch on this value, so not even the last bit may drift.
    gen = torch.Generator().manual_seed(seed)
    n_classes = 37
    targets = torch.randint(0, n_classes - 3, (997,), generator=gen)  # the top classes have no item
    scores = torch.randn(997, n_classes, generator=gen) + 2.0 * F.one_hot(targets, n_classes)
    if scores_kind == "ties":
        scores = scores.round()
    elif scores_kind == "half":
        scores = scores.half()
    elif scores_kind == "nan":  # a diverged validation pass: argmax takes the first NaN
        scores[torch.rand(scores.shape, generator=gen) < 0.02] = float("nan")
    assert top1_accuracy(scores, targets, kind) == _argmax_accuracy(scores, targets, kind)


# ---- supervised objective ------------------------------------------------------------------------------

def test_class_weighted_loss_equals_weighted_cross_entropy():
    images, labels = _images(40, 16, n_classes=3)
    labels = np.where(np.arange(40) < 30, 0, labels)  # imbalanced
    cfg = dataclasses.replace(TINY, class_weights="inverse", val_fraction=0.0, augment=AugmentConfig(enabled=False))
    obj = SupervisedObjective(images, labels, np.arange(40), cfg)
    obj.setup(torch.device("cpu"), torch.contiguous_format)
    counts = np.bincount(labels, minlength=3)
    np.testing.assert_allclose(obj.class_weight.numpy(), counts.max() / counts, rtol=1e-6)
    model = _model(3)
    x, y = next(iter(obj.train_batches(0, torch.Generator().manual_seed(0))))
    loss, correct, n = obj.loss(model, (x, y))
    logits = model(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, weight=torch.tensor(counts.max() / counts).float()))
    assert n == 16 and int(correct) == int((logits.argmax(1) == y).sum())


def test_balanced_sampling_draws_classes_equally_from_imbalanced_data():
    labels = np.repeat([0, 1, 2], [300, 30, 6])
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    cfg = dataclasses.replace(TINY, batch_size=48, balanced_sampling=True, val_fraction=0.0,
                              augment=AugmentConfig(enabled=False))
    obj = SupervisedObjective(images, labels, np.arange(len(labels)), cfg)
    obj.setup(torch.device("cpu"), torch.contiguous_format)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([y for epoch in range(4) for _, y in obj.train_batches(epoch, g)])
    assert len(drawn) == 4 * obj.steps_per_epoch() * 48
    freq = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.04)


def test_plain_epoch_visits_each_training_image_at_most_once():
    images, labels = _images(70, 4)
    cfg = dataclasses.replace(TINY, val_fraction=0.0, augment=AugmentConfig(enabled=False))
    obj = SupervisedObjective(images, labels, np.arange(70), cfg)
    obj.setup(torch.device("cpu"), torch.contiguous_format)
    batches = list(obj.train_batches(0, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [16] * 4  # 70 // 16 full batches, the remainder dropped
    xs = torch.cat([x for x, _ in batches]).flatten(1)
    assert len(torch.unique(xs, dim=0)) == 64


def test_objective_refuses_overlapping_train_and_validation_images():
    images, labels = _images(8, 4)
    with pytest.raises(ValueError, match="both train and val"):
        SupervisedObjective(images, labels, np.arange(6), TINY, val_indices=[5, 6])


# ---- the training loop ---------------------------------------------------------------------------------

def test_training_on_an_easy_task_drives_accuracy_up():
    cfg = dataclasses.replace(TINY, epochs=4, lr=0.05)
    model, result = _run(cfg, data=_images(96, 24, n_classes=3))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["train_acc"] > 0.8
    assert result.best_score >= 0.95  # chance is 1/3


def test_two_runs_with_one_seed_give_identical_weights_and_history():
    (a, ra), (b, rb) = _run(), _run()
    assert _same_weights(a.state_dict(), b.state_dict())
    assert _without_timing(ra.history) == _without_timing(rb.history)
    c, _ = _run(dataclasses.replace(TINY, seed=1))
    assert not _same_weights(a.state_dict(), c.state_dict())


def test_fit_leaves_the_global_rng_untouched():
    before = torch.get_rng_state()
    _run(dataclasses.replace(TINY, epochs=1))
    assert torch.equal(torch.get_rng_state(), before)


def test_model_building_and_cpu_training_never_reseed_a_cuda_generator(monkeypatch):
    calls = []
    for fn in ("manual_seed", "manual_seed_all", "seed", "seed_all"):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, _fn=fn, **k: calls.append((_fn, a)))
    model = Classifier(create_backbone("conv4", seed=0), 2, seed=0)
    images, labels = _images()
    cfg = dataclasses.replace(TINY, epochs=1)
    fit(model, SupervisedObjective(images, labels, np.arange(len(labels)), cfg), cfg, progress=False)
    assert calls == []


class _DropoutHead(torch.nn.Module):
    """Draws from the global RNG in training (dropout), as some heads and backbones do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _linear(3 * 32 * 32, 2)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.drop(x.flatten(1)))


def test_dropout_draws_are_seeded_by_the_run_not_by_the_caller_rng():
    images, labels = _images()
    cfg = dataclasses.replace(TINY, epochs=1, channels_last=False)
    states = []
    for caller_seed in (1, 2):
        model = _DropoutHead()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(caller_seed)  # a caller whose own stream differs must not change the run
            fit(model, SupervisedObjective(images, labels, np.arange(len(labels)), cfg), cfg, progress=False)
        states.append(model.state_dict())
    assert _same_weights(*states)


class _Killed(Exception):
    pass


class _KillAt(Objective):
    """Wraps an objective and raises at (epoch, step), like a run killed there."""

    def __init__(self, inner: Objective, epoch: int, step: int) -> None:
        self.inner, self.epoch, self.step = inner, epoch, step

    def setup(self, device, memory_format):
        self.inner.setup(device, memory_format)

    def steps_per_epoch(self):
        return self.inner.steps_per_epoch()

    def train_batches(self, epoch, generator):
        for step, batch in enumerate(self.inner.train_batches(epoch, generator)):
            if (epoch, step) == (self.epoch, self.step):
                raise _Killed
            yield batch

    def loss(self, model, batch):
        return self.inner.loss(model, batch)

    def validate(self, model):
        return self.inner.validate(model)


@pytest.mark.parametrize("kill_epoch,kill_step", [(2, 0), (2, 1), (1, 2)])
def test_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path, kill_epoch, kill_step):
    reference, ref_result = _run(restore_best=False)
    images, labels = _images()
    killed = _KillAt(SupervisedObjective(images, labels, np.arange(len(labels)), TINY), kill_epoch, kill_step)
    with pytest.raises(_Killed):
        fit(_model(), killed, TINY, tmp_path, progress=False)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == kill_epoch  # only the epoch in progress was lost
    model, result = _run(out_dir=tmp_path, resume=True, restore_best=False)
    assert _same_weights(model.state_dict(), reference.state_dict())
    assert _without_timing(result.history) == _without_timing(ref_result.history)
    assert result.best_epoch == ref_result.best_epoch and _same_weights(result.best_state, ref_result.best_state)


def test_resuming_a_finished_run_trains_nothing_more(tmp_path):
    first, r1 = _run(out_dir=tmp_path)
    again, r2 = _run(out_dir=tmp_path, resume=True)
    assert _same_weights(first.state_dict(), again.state_dict()) and r1.history == r2.history


def test_existing_checkpoint_without_resume_is_an_error(tmp_path):
    _run(dataclasses.replace(TINY, epochs=1), out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        _run(dataclasses.replace(TINY, epochs=1), out_dir=tmp_path)


def test_resuming_with_another_config_names_the_difference(tmp_path):
    _run(dataclasses.replace(TINY, epochs=1), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.05, now 0.1"):
        _run(dataclasses.replace(TINY, epochs=1, lr=0.1), out_dir=tmp_path, resume=True)


def test_a_checkpoint_written_before_a_setting_existed_resumes_when_the_setting_is_at_its_default(tmp_path):
    first, r1 = _run(out_dir=tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("loss", "loss_tau"):  # settings added after such a checkpoint was written
        del saved["config"][key]
    torch.save(saved, tmp_path / "last.pt")
    again, r2 = _run(out_dir=tmp_path, resume=True)
    assert _same_weights(first.state_dict(), again.state_dict()) and r1.history == r2.history
    with pytest.raises(ValueError, match=r"loss: checkpoint 'ce', now 'logit_adjusted'"):
        _run(dataclasses.replace(TINY, loss="logit_adjusted"), out_dir=tmp_path, resume=True)


def test_best_checkpoint_carries_config_meta_and_a_loadable_backbone(tmp_path):
    model, result = _run(out_dir=tmp_path, meta={"backbone": "conv4", "classes": ["a", "b"]})
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["config"] == dataclasses.asdict(TINY) and best["meta"]["classes"] == ["a", "b"]
    assert best["epoch"] == result.best_epoch and _same_weights(best["model"], result.best_state)
    assert _same_weights(model.state_dict(), result.best_state)  # restore_best
    backbone = _conv4(seed=5)
    backbone.load_state_dict(best["backbone"])
    assert _same_weights(backbone.state_dict(), model.backbone.state_dict())
    with pytest.raises(ValueError, match="holds a conv4 backbone, but resnet12"):
        create_backbone("resnet12", tmp_path / "best.pt")


class _Scripted(Objective):
    """A linear model on fixed data whose validation scores are scripted, to test best-epoch selection."""

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)

    def steps_per_epoch(self):
        return 2

    def train_batches(self, epoch, generator):
        order = torch.randperm(32, generator=generator)
        return [(self.x[order[:16]], self.y[order[:16]]), (self.x[order[16:]], self.y[order[16:]])]

    def loss(self, model, batch):
        logits = model(batch[0])
        return F.cross_entropy(logits, batch[1]), (logits.argmax(1) == batch[1]).sum(), len(batch[1])

    def validate(self, model):
        self.calls += 1
        return self.scores[self.calls - 1]


@pytest.mark.parametrize("scores,best", [([0.2, 0.9, 0.5], 2), ([0.5, 0.5, 0.4], 1), ([None, None, None], 3),
                                         ([0.1, 0.2, 0.3], 3)])
def test_the_best_validation_epoch_is_kept_and_restored(tmp_path, scores, best):
    cfg = dataclasses.replace(TINY, epochs=3, warmup_epochs=0.0)
    model = _linear()
    result = fit(model, _Scripted(scores), cfg, tmp_path, progress=False)
    assert result.best_epoch == best and result.best_score == scores[best - 1]
    assert [row["val_score"] for row in result.history] == scores
    assert _same_weights(model.state_dict(), result.best_state)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best


def test_a_diverging_loss_stops_training_with_advice():
    class NaN(_Scripted):
        def loss(self, model, batch):
            loss, correct, n = super().loss(model, batch)
            return loss * float("nan"), correct, n

    with pytest.raises(FloatingPointError, match="lower train.lr"):
        fit(_linear(), NaN([None] * 3), TINY, progress=False)


def test_history_reports_throughput_and_timing():
    _, result = _run(dataclasses.replace(TINY, epochs=1))
    row = result.history[0]
    assert set(row) == {"epoch", "train_loss", "train_acc", "lr", "images_per_s", "train_seconds", "val_score",
                        "seconds"}
    assert row["images_per_s"] == pytest.approx(48 // 16 * 16 / row["train_seconds"])
    assert 0 < row["train_seconds"] <= row["seconds"]


@pytest.mark.parametrize("overrides", [dict(cpu_amp=True), dict(channels_last=False)])
def test_cpu_bf16_and_contiguous_variants_are_deterministic_and_learn(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    (a, ra), (b, _) = _run(cfg), _run(cfg)
    assert _same_weights(a.state_dict(), b.state_dict())
    assert ra.best_score >= 0.9 and ra.history[-1]["train_loss"] < ra.history[0]["train_loss"]


def test_frozen_backbone_keeps_its_weights_and_batchnorm_statistics_while_the_head_learns():
    images, labels = _images()
    model = _model(freeze_backbone=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dataclasses.replace(TINY, lr=0.5)
    fit(model, SupervisedObjective(images, labels, np.arange(len(labels)), cfg), cfg, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    model.train()
    assert model.training and not model.backbone.training
