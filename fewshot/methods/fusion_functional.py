"""Pure tensor functions behind image+text fusion: temperature scaling, the two fusion rules and the
choice of their setting on validation items.

Shapes: ``n`` items, ``C`` classes; "log-probabilities" are rows of ``log_softmax``. References:
- Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML): temperature scaling.
- Late fusion by a product of experts (Hinton 2002) = summed log-probabilities, renormalised; weighted, a
  log-linear pool (Genest & Zidek 1986) whose weight is chosen on validation items.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(21))  # 0.0, 0.05, ..., 1.0
DEFAULT_WEIGHTS: tuple[float, ...] = tuple(i / 20 for i in range(21))  # the image's weight in the product
BRANCHES = ("image", "text")


def fit_temperature(logits: Tensor, targets: Tensor, *, steps: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` [n, C] on ``targets`` [n]
    (Guo et al. 2017): L-BFGS on log T from T = 1, and T = 1 kept unless the fit lowers the NLL."""
    logits, targets = logits.detach().double(), targets.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not torch.isfinite(torch.tensor(t)) or nll(logits, targets, t) > nll(logits, targets, 1.0):
        return 1.0
    return t


def nll(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` [n] under ``softmax(logits / temperature)`` [n, C]."""
    return float(F.cross_entropy(logits.double() / temperature, targets.long()))


def product_fusion(image_logp: Tensor, text_logp: Tensor, image_weight: float = 0.5,
                   abstains: Tensor | None = None) -> Tensor:
    """[n, C] log-probabilities of the normalised weighted product ``p_image^(2w) * p_text^(2(1-w))``, w =
    ``image_weight`` in [0, 1]: w = 0.5 is the plain product of experts, 1 the image alone, 0 the text alone
    (argmax-wise). Where the text abstains (``abstains`` bool [n]) the image's own log-probabilities."""
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight={image_weight} must lie in [0, 1]")
    fused = torch.log_softmax(2 * image_weight * image_logp + 2 * (1 - image_weight) * text_logp, dim=1)
    return fused if abstains is None else torch.where(abstains.to(fused.device).unsqueeze(1), image_logp, fused)


def gate_fusion(image_logp: Tensor, text_logp: Tensor, threshold: float, abstains: Tensor | None = None,
                primary: str = "image") -> Tensor:
    """[n, C]: the ``primary`` branch's log-probabilities where its top probability is >= ``threshold``, the
    other branch's elsewhere ("image unless unsure" or "text unless unsure"). Where the text abstains
    (``abstains`` bool [n]) the image decides, whatever the primary."""
    if primary not in BRANCHES:
        raise ValueError(f"unknown primary branch {primary!r}; known: {', '.join(BRANCHES)}")
    first, second = (image_logp, text_logp) if primary == "image" else (text_logp, image_logp)
    gated = torch.where((first.max(dim=1).values.exp() < threshold).unsqueeze(1), second, first)
    if abstains is not None:
        gated = torch.where(abstains.to(gated.device).unsqueeze(1), image_logp, gated)
    return gated


def macro_top1(scores: Tensor, targets: Tensor) -> float:
    """Mean over the classes present in ``targets`` of each class's top-1 accuracy."""
    hits = (scores.argmax(dim=1) == targets).double()
    classes, inverse = targets.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, hits)
    return float((per_class / torch.bincount(inverse).double()).mean())


def choose_threshold(image_logp: Tensor, text_logp: Tensor, targets: Tensor, abstains: Tensor | None = None,
                     thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
                     primaries: tuple[str, ...] = BRANCHES) -> tuple[str, float, float]:
    """(primary branch, threshold, macro top-1): the gate scoring best on validation items, over both
    directions; among ties the image first, then the smallest threshold (the primary decides more)."""
    scored = [(macro_top1(gate_fusion(image_logp, text_logp, t, abstains, p), targets), p, t)
              for p in primaries for t in thresholds]
    best = max(s for s, _, _ in scored)
    return next((p, t, s) for s, p, t in scored if s == best)


def choose_weight(image_logp: Tensor, text_logp: Tensor, targets: Tensor, abstains: Tensor | None = None,
                  weights: tuple[float, ...] = DEFAULT_WEIGHTS) -> tuple[float, float]:
    """(image weight, macro top-1): the weighted product scoring best on validation items; among ties the
    one whose fused log-likelihood is highest (then the first in the grid)."""
    scored = []
    for w in weights:
        fused = product_fusion(image_logp, text_logp, w, abstains)
        scored.append((macro_top1(fused, targets), -float(F.nll_loss(fused, targets.long())), -len(scored), w))
    best = max(scored)
    return best[3], best[0]
