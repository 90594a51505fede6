"""Pure tensor functions behind image+text fusion: temperature scaling and the two fusion rules.

Shapes: ``n`` items, ``C`` classes; "log-probabilities" are rows of ``log_softmax``. References:
- Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML): temperature scaling.
- Late fusion by a product of experts (Hinton 2002) = summed log-probabilities, renormalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(21))  # 0.0, 0.05, ..., 1.0


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


def product_fusion(image_logp: Tensor, text_logp: Tensor) -> Tensor:
    """[n, C] log-probabilities of the normalised product ``p_image * p_text``. A text row that abstains
    (uniform) leaves the image's distribution unchanged."""
    return torch.log_softmax(image_logp + text_logp, dim=1)


def gate_fusion(image_logp: Tensor, text_logp: Tensor, threshold: float, abstains: Tensor | None = None) -> Tensor:
    """[n, C]: the image's log-probabilities where its top probability is >= ``threshold`` (or the text
    abstains, ``abstains`` bool [n]), the text's elsewhere: the seed's "text when the image is unsure"."""
    use_text = image_logp.max(dim=1).values.exp() < threshold
    if abstains is not None:
        use_text &= ~abstains.to(use_text.device)
    return torch.where(use_text.unsqueeze(1), text_logp, image_logp)


def macro_top1(scores: Tensor, targets: Tensor) -> float:
    """Mean over the classes present in ``targets`` of each class's top-1 accuracy."""
    hits = (scores.argmax(dim=1) == targets).double()
    classes, inverse = targets.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, hits)
    return float((per_class / torch.bincount(inverse).double()).mean())


def choose_threshold(image_logp: Tensor, text_logp: Tensor, targets: Tensor, abstains: Tensor | None = None,
                     thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> tuple[float, float]:
    """(threshold, its macro top-1): the gate threshold scoring best on validation items; the first
    (smallest, so the image decides more) among ties."""
    scored = [(macro_top1(gate_fusion(image_logp, text_logp, t, abstains), targets), t) for t in thresholds]
    best = max(s for s, _ in scored)
    return next(t for s, t in scored if s == best), best
