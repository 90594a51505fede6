from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test, and no subprocess a test starts, writes into the user's ~/.cache/fewshot.

    Session scope: pytest sets up wider-scoped fixtures first, so a function-scoped fixture would come too
    late for module- and session-scoped ones (e.g. the benchmark smoke run, a subprocess). The variable is
    set in ``os.environ`` itself so that subprocesses inherit it, and restored when the session ends.
    """
    cache = tmp_path_factory.getbasetemp() / "fewshot-cache"
    before = os.environ.get("FEWSHOT_CACHE")
    os.environ["FEWSHOT_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("FEWSHOT_CACHE", None)
    else:
        os.environ["FEWSHOT_CACHE"] = before


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for tests of tiny tensor ops: on the 2-core CI box a second busy process makes
    2-thread OpenMP barriers stall (many times slower). Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real Kaggle copy named by FEWSHOT_DATA; tests that need it are skipped without it."""
    value = os.environ.get("FEWSHOT_DATA")
    if not value or not (Path(value) / "styles.csv").is_file():
        pytest.skip("FEWSHOT_DATA does not name the real dataset")
    return Path(value)


def style_row(pid: int, article: str, year: int | str = 2012, name: str | None = None) -> str:
    name = name if name is not None else f"Brand Men Blue {article}"
    return f"{pid},Men,Apparel,Topwear,{article},Blue,Summer,{year},Casual,{name}"


def solid_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (60, 80)) -> None:
    """A one-colour JPEG of ``size`` = (w, h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


@pytest.fixture
def make_layout(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny Kaggle layout: ``rows`` are styles.csv lines; ``images`` maps id -> colour or raw bytes
    (ids absent from ``images`` get a grey JPEG unless listed in ``missing``)."""

    def make(rows: list[str], images: Mapping[int, object] | None = None, missing: tuple[int, ...] = (),
             name: str = "data") -> Path:
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "styles.csv").write_text("\n".join([HEADER, *rows]) + "\n")
        images = dict(images or {})
        for row in rows:
            head = row.split(",", 1)[0]
            if not head.isdigit() or int(head) in missing:
                continue
            spec = images.get(int(head), (128, 128, 128))
            target = root / "images" / f"{int(head)}.jpg"
            if isinstance(spec, bytes):
                target.write_bytes(spec)
            elif isinstance(spec, np.ndarray):
                Image.fromarray(spec).save(target, quality=95)
            else:
                solid_jpeg(target, spec)
        return root

    return make


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the Kaggle layout (12 classes, 480 images), written once per session."""
    from fewshot.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(root, n_classes=12, n_images=480, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_cached(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The small synthetic dataset served from its image cache at 32x24 (fast to train on)."""
    import warnings

    from fewshot.data.dataset import FashionProducts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FashionProducts(synthetic_root).cached((32, 24), cache_root=tmp_path_factory.mktemp("cache"),
                                                      progress=False)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke config run once for the whole session (benchmark, statistics and reports tests read it). A
    subprocess, like the killed runs of the tests: both then use torch's default thread count, and CPU kernels
    give bit-identical results only for the same thread count."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    smoke = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "smoke.toml"
    subprocess.run([sys.executable, "-m", "benchmarks.run", "--no-progress", "--config", str(smoke), "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    return out
