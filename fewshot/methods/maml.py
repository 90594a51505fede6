"""MAML on the few-shot interface, built on ``learn2learn.algorithms.MAML`` (learn2learn is imported lazily).

MAML (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML, arXiv:1703.03400) meta-learns an initialisation from which a few SGD steps on an episode's support
set classify its queries; first-order MAML (FOMAML, Nichol, Achiam & Schulman 2018, "On First-Order
Meta-Learning Algorithms", arXiv:1803.02999) drops the second derivatives of those inner steps.

The model is a meta-learned body ([n, ...] -> [n, d], e.g. an MLP on cached features [n, d_in]) and a
linear head [n_way, d] + bias [n_way] that is zero at the start of every episode, so one meta-learned
body serves 2-, 5- or 15-way episodes and no way is favoured before the support is seen (the zeroing trick
of Kao et al. 2022, "MAML is a Noisy Contrastive Learner in Classification", ICLR; Ye & Chao 2022, "How
to Train Your MAML to Excel in Few-Shot Classification", ICLR, meta-learn one head row shared by all ways).

    model = MAML(body, inner_lr=0.1, adaptation_steps=5)
    model.fit(support, support_labels).scores(query)                                  # [n_query, n_way]
    loss, correct = model.query_loss(support, support_labels, query, query_labels)   # meta-training step
    MAML(learner=l2l.algorithms.MAML(net, lr=0.4))    # any learn2learn learner (net gives [n, n_way] logits)
"""
from __future__ import annotations

import contextlib
import io
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fewshot.methods.base import FewShotClassifier

INSTALL_HINT = ("learn2learn 0.2.0 is not importable; pip cannot build it on Python 3.11 by itself: run "
                "`python tools/install_learn2learn.py --python .venv/bin/python` (`make install` does)")


def require_learn2learn() -> ModuleType:
    """The ``learn2learn`` module, or an ImportError that says how to install it."""
    try:
        # learn2learn imports gym, whose import prints a deprecation notice on stderr into every benchmark log
        # (learn2learn's gym environments are not used here); only that import's stderr is silenced.
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return learn2learn


def zero_head(d: int, n_way: int, like: Tensor) -> nn.Linear:
    """A linear head [n_way, d] + [n_way], all zeros (no draw from the global RNG), on ``like``'s device."""
    head = nn.utils.skip_init(nn.Linear, d, n_way, device=like.device, dtype=like.dtype)
    with torch.no_grad():
        head.weight.zero_(), head.bias.zero_()
    return head


def feature_dim(body: nn.Module, x: Tensor) -> int:
    """d of ``body``'s output for inputs like ``x``: one row in eval mode (no batch-norm statistic moves)."""
    was_training = body.training
    body.eval()
    with torch.no_grad():
        d = body(x[:1]).shape[-1]
    body.train(was_training)
    return int(d)


def detach_(module: nn.Module) -> nn.Module:
    """Cut an adapted clone's parameters from the meta-parameters' graph (scores need no grad, and a
    detached clone can be deep-copied)."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = p.detach()
    return module


class MAML(FewShotClassifier):
    """MAML / FOMAML; ``fit`` adapts a clone, ``scores`` runs it, ``query_loss`` is the meta-training loss.

    Args:
        body: meta-learned module, inputs [n, ...] -> features [n, d] (``nn.Identity()``: head only).
        inner_lr, adaptation_steps: the inner loop, that many SGD steps on the support's mean cross-entropy
            (default 0.1; with ``learner``, default the learner's ``lr``).
        first_order: FOMAML's meta-gradient in :meth:`query_loss` (default False; with ``learner``, its own).
        learner: instead of ``body``, a ``learn2learn.algorithms.MAML`` whose module maps [n, ...] to
            [n, n_way] logits with its own (meta-learned, fixed-size) head.

    Fitting twice gives the same scores and nothing carries over from one episode to the next: ``fit``
    adapts a fresh clone, leaving the meta-parameters (``body`` / ``learner``) unchanged.
    """

    def __init__(self, body: nn.Module | None = None, *, inner_lr: float | None = None, adaptation_steps: int = 5,
                 first_order: bool | None = None, learner: nn.Module | None = None) -> None:
        super().__init__()
        l2l = require_learn2learn()  # not kept: a module object would not deep-copy
        if (body is None) == (learner is None):
            raise ValueError("give exactly one of body= (a module [n, ...] -> [n, d]) and learner= (a "
                             "learn2learn.algorithms.MAML)")
        if learner is not None and not isinstance(learner, l2l.algorithms.MAML):
            raise TypeError(f"learner must be a learn2learn.algorithms.MAML, got {type(learner).__name__}")
        if adaptation_steps < 1:
            raise ValueError(f"adaptation_steps must be >= 1, got {adaptation_steps}")
        self.body, self.learner = body, learner
        default_lr, default_fo = (learner.lr, learner.first_order) if learner is not None else (0.1, False)
        self.inner_lr = float(default_lr if inner_lr is None else inner_lr)
        self.first_order = bool(default_fo if first_order is None else first_order)
        self.adaptation_steps = int(adaptation_steps)
        self._adapted: tuple[nn.Module, ...] = ()  # a tuple, not a submodule: kept out of state_dict

    def _wrap(self, module: nn.Module) -> Any:
        """``module`` as a learn2learn learner with this model's inner rate, cloned for one episode."""
        l2l = require_learn2learn()
        return l2l.algorithms.MAML(module, lr=self.inner_lr, allow_unused=True, allow_nograd=True).clone()

    def _inner_loop(self, learner: Any, support: Tensor, support_labels: Tensor, second_order: bool) -> Any:
        """``adaptation_steps`` SGD steps of ``learner`` (a learn2learn clone) on the support cross-entropy."""
        for _ in range(self.adaptation_steps):
            learner.adapt(F.cross_entropy(learner(support), support_labels), first_order=not second_order)
        return learner

    def adapt(self, support: Tensor, support_labels: Tensor, *, second_order: bool) -> nn.Module:
        """The episode's adapted model, query [n, ...] -> logits [n, n_way]; support [n_s, ...] with labels
        [n_s] in 0..n_way-1. ``second_order`` keeps the inner steps' graph for a second-order meta-gradient."""
        if self.learner is not None:
            clone = self.learner.clone()
            clone.lr = self.inner_lr
        else:
            head = zero_head(feature_dim(self.body, support), self._n_classes(support_labels), support)
            clone = self._wrap(nn.Sequential(self.body, head))
        return self._inner_loop(clone, support, support_labels, second_order)

    def query_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                   query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """(mean query cross-entropy with the graph to the meta-parameters, number of correct queries):
        second-order unless ``first_order``. Backpropagate it (averaged over a meta-batch) for the outer step."""
        logits = self.adapt(support, support_labels, second_order=not self.first_order)(query)
        return F.cross_entropy(logits, query_labels), (logits.argmax(1) == query_labels).sum()

    def fit(self, support: Tensor, support_labels: Tensor) -> MAML:
        with torch.enable_grad():  # the inner loop needs gradients even under a caller's no_grad
            adapted = self.adapt(support, support_labels, second_order=False)
        self._adapted = (detach_(adapted),)
        return self

    def scores_episodes(self, support: Tensor, support_labels: Tensor, query: Tensor,
                        chunk: int = 32) -> Tensor | None:
        """[E, n_q, n_way]: every episode's inner loop run side by side (``torch.func.vmap`` of ``grad``), the
        same SGD steps ``fit`` takes one episode at a time through learn2learn; ``chunk`` episodes at once
        bound the memory (each holds its own adapted body). None with a ``learner`` (its own module)."""
        if self.learner is not None:
            return None
        from torch.func import functional_call, grad, vmap

        n_way = self._n_classes(support_labels)
        body = {k: v.detach() for k, v in self.body.named_parameters()}
        buffers = dict(self.body.named_buffers())
        d = feature_dim(self.body, support[0])

        def logits(params: dict, x: Tensor) -> Tensor:
            return self._features(functional_call, params, buffers, x) @ params["w"].T + params["b"]

        def loss(params: dict, x: Tensor) -> Tensor:
            return F.cross_entropy(logits(params, x), support_labels)

        def one(xs: Tensor, xq: Tensor) -> Tensor:
            params = self._start(body, xs, functional_call, buffers, n_way, d)
            for _ in range(self.adaptation_steps):
                params = {k: v - self.inner_lr * g for (k, v), g in zip(params.items(), grad(loss)(params, xs).values())}
            return logits(params, xq)

        with torch.no_grad():
            return torch.cat([vmap(one)(support[i:i + chunk], query[i:i + chunk])
                              for i in range(0, len(support), chunk)])

    def _start(self, body: dict, xs: Tensor, call: Any, buffers: dict, n_way: int, d: int) -> dict:
        """The parameters an episode's inner loop starts from: the body's and a zero head."""
        return {**{f"body.{k}": v for k, v in body.items()}, "w": xs.new_zeros(n_way, d), "b": xs.new_zeros(n_way)}

    def _features(self, call: Any, params: dict, buffers: dict, x: Tensor) -> Tensor:
        """The body's features [n, d] of x under ``params`` (its "body.*" entries)."""
        return call(self.body, ({k[5:]: v for k, v in params.items() if k.startswith("body.")}, buffers), (x,))

    def scores(self, query: Tensor) -> Tensor:
        if not self._adapted:
            raise RuntimeError(f"{type(self).__name__}.scores called before fit")
        with torch.no_grad():  # evaluation only: meta-training goes through query_loss
            return self._adapted[0](query)
