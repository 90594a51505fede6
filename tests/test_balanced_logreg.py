"""BalancedLogReg against scikit-learn's LogisticRegression(class_weight="balanced") on StandardScaler features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.methods import TextHead
from fewshot.methods.balanced_logreg import BalancedLogReg

sklearn = pytest.importorskip("sklearn")


def _data(sparse: bool, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [40, 12, 5, 3][:n_classes]
    y = np.repeat(np.arange(n_classes), sizes)
    d = 30
    centres = rng.normal(size=(n_classes, d))
    x = centres[y] + rng.normal(size=(len(y), d))
    q = centres[rng.integers(n_classes, size=25)] + rng.normal(size=(25, d))
    if sparse:  # 0/1 bag-of-words-like features, ~5% non-zero, one column constant
        x, q = (rng.random((len(y), 200)) < 0.04).astype(np.float64), (rng.random((25, 200)) < 0.04).astype(np.float64)
        x[np.arange(len(y)), y] = 1.0
        x[:, -1] = 0.0
    return x, y, q


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_matches_sklearn_on_standardised_features(sparse: bool, n_classes: int, one_torch_thread) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, q = _data(sparse, n_classes)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(class_weight="balanced", C=0.5, max_iter=5000, tol=1e-10).fit(scaler.transform(x), y)
    ours = BalancedLogReg(C=0.5, max_iter=5000, tol=1e-10).fit(torch.from_numpy(x).float(), torch.from_numpy(y))
    assert (np.count_nonzero(x) < 0.1 * x.size) == sparse  # both paths of fit are exercised
    scores = ours.scores(torch.from_numpy(q).float())
    assert scores.shape == (len(q), n_classes)
    expected = ref.predict_proba(scaler.transform(q))
    np.testing.assert_allclose(torch.softmax(scores.double(), 1).numpy(), expected, atol=2e-3)
    assert np.array_equal(scores.argmax(1).numpy(), ref.predict(scaler.transform(q)))


def test_refuses_bad_input_and_wraps_as_a_text_head() -> None:
    with pytest.raises(ValueError, match="C="):
        BalancedLogReg(C=0)
    with pytest.raises(RuntimeError, match="fit"):
        BalancedLogReg().scores(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="every class"):
        BalancedLogReg().fit(torch.randn(4, 3), torch.tensor([0, 0, 2, 2]))
    x, y, q = _data(False, 4)
    head = TextHead(BalancedLogReg()).fit(torch.from_numpy(x).float(), torch.from_numpy(y))
    q = torch.from_numpy(q).float()
    q[0] = 0.0  # no text evidence: the head abstains
    s = head.scores(q)
    assert torch.all(s[0] == 0) and not head.uses_validation
