"""Phase keys hold the code that computed them: change a method's file and its evaluation phase gets a new key
(``--reuse`` and ``--resume`` then recompute it), while every other method's key stays as it was."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmarks.builtin  # noqa: F401  (registers the built-in methods)
from benchmarks.config import BenchmarkConfig
from benchmarks.engine import codekey
from benchmarks.engine.context import RunContext
from benchmarks.engine.phases import PhaseStore
from benchmarks.protocols.transfer import eval_key
from benchmarks.registry.methods import BenchmarkMethod, get_method, method_code, register_method, registered

KNN = '''"""Toy method A: 1-nearest-neighbour, its maths in a helper module of the same package."""
import torch

from fewshot.methods import FewShotClassifier
from toy_methods.distances import DISTANCE


class NearestNeighbour(FewShotClassifier):
    def fit(self, support, support_labels):
        self.support, self.labels = support, support_labels
        return self

    def scores(self, query):
        return -DISTANCE(query, self.support)[:, self.labels.argsort()]{suffix}
'''
DISTANCES = '''import torch

DISTANCE = torch.cdist
'''
FARTHEST = '''"""Toy method B, in a file of its own."""
from fewshot.methods import FewShotClassifier


class Farthest(FewShotClassifier):
    def fit(self, support, support_labels):
        return self

    def scores(self, query):
        return query
'''


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "toy_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "knn.py").write_text(KNN.format(suffix=""))
    (package / "distances.py").write_text(DISTANCES)
    (package / "farthest.py").write_text(FARTHEST)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(codekey, "PACKAGES", (*codekey.PACKAGES, "toy_methods"))
    codekey._module_sources.cache_clear()
    yield package
    codekey._module_sources.cache_clear()
    for name in [m for m in sys.modules if m.startswith("toy_methods")]:
        del sys.modules[name]


def _context(tmp_path: Path) -> RunContext:
    cfg = BenchmarkConfig(methods=("crt",))
    ctx = RunContext(cfg, tmp_path, np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1, np.int64), "pixels",
                     PhaseStore(tmp_path), False, torch.device("cpu"))
    ctx.phases.keys.update(stage1="stage1-key", stage2="stage2-key", stage2_joint="joint-key")
    return ctx


def _toy_methods() -> tuple[BenchmarkMethod, BenchmarkMethod]:
    knn = importlib.import_module("toy_methods.knn")
    farthest = importlib.import_module("toy_methods.farthest")
    return (BenchmarkMethod("toy_knn", "toy A", transfer="stage1", classifier=lambda cfg, m: knn.NearestNeighbour()),
            BenchmarkMethod("toy_far", "toy B", transfer="stage1", classifier=lambda cfg, m: farthest.Farthest()))


def _keys(ctx: RunContext, a: BenchmarkMethod, b: BenchmarkMethod) -> dict[str, str]:
    with registered(a), registered(b):
        return {m.name: eval_key(ctx, m) for m in (a, b, get_method("crt"), get_method("tau_norm"))}


@pytest.mark.parametrize("edited", ["knn.py", "distances.py"])
def test_changing_a_methods_code_changes_its_key_and_leaves_the_others(toy_package, tmp_path, edited):
    ctx = _context(tmp_path)
    before = _keys(ctx, *_toy_methods())
    assert _keys(ctx, *_toy_methods()) == before  # the same code, the same keys
    if edited == "knn.py":
        (toy_package / "knn.py").write_text(KNN.format(suffix=" * 2"))
    else:  # a module the method's file imports: its maths
        (toy_package / "distances.py").write_text(DISTANCES.replace("torch.cdist", "torch.cdist  # p=2"))
    for name in ("toy_methods.distances", "toy_methods.knn"):
        importlib.reload(importlib.import_module(name))
    codekey._module_sources.cache_clear()
    after = _keys(ctx, *_toy_methods())
    assert after["toy_knn"] != before["toy_knn"]
    assert {k: v for k, v in after.items() if k != "toy_knn"} == {k: v for k, v in before.items() if k != "toy_knn"}


def test_a_methods_key_also_changes_with_its_config_and_its_embeddings_key(toy_package, tmp_path):
    ctx = _context(tmp_path)
    knn, _ = _toy_methods()
    with registered(knn):
        first = eval_key(ctx, knn)
        ctx.phases.keys["stage1"] = "another stage1"
        assert eval_key(ctx, knn) != first


def test_builtin_methods_differ_in_code_where_their_files_differ():
    digests = {name: method_code(get_method(name)) for name in ("crt", "tau_norm", "logit_adjust", "text")}
    assert len(set(digests.values())) == len(digests)
    # methods sharing one classifier factory share its code digest (their keys differ by name and embedding)
    assert method_code(get_method("centroid_stage1")) == method_code(get_method("centroid_imagenet"))


def test_code_digests_are_the_same_in_another_process():
    here = {name: method_code(get_method(name)) for name in ("crt", "maml", "fusion_gate", "two_stage")}
    code = ("import benchmarks.builtin; from benchmarks.registry.methods import get_method, method_code; "
            "print({n: method_code(get_method(n)) for n in ('crt', 'maml', 'fusion_gate', 'two_stage')})")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert done.stdout.strip() == str(here)


def test_registering_a_method_on_an_unknown_embedding_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown embedding 'stage3'; known: imagenet, stage1"):
        register_method(BenchmarkMethod("x", "nowhere", transfer="stage3", classifier=lambda cfg, m: None))
