"""Episodes per second of this sampler and evaluator against learn2learn's Taskset and easyfsl's TaskSampler.

    python -m benchmarks.studies.sampler_speed [--repeats 3] [--seconds 0.6] [--threads 1] [--out DIR]

Every row runs on the same in-memory data (64-d float features; 5-way 5-shot 15-query), side by side in
one process, and the repeats are interleaved row by row so that a change in machine load hits every row
alike. The anchors are optional: a missing one is reported, never an error. The table is written
atomically to ``sampler_speed.md`` in a fresh ``runs/sampler_speed-<UTC timestamp>/`` folder, or in
``--out DIR``: ``--out benchmarks/results`` refreshes the committed table. The last line printed is
``ratio_vs_best_anchor=<x>`` (loaded episodes/s of ours over the best anchor's, the smallest over the datasets).

learn2learn 0.2.0 runs in the project's own environment: its PyPI sdist does not build on Python 3.11 by
itself, so ``make install`` (or ``python tools/install_learn2learn.py --python .venv/bin/python``) builds it
with Cython 3 and without qpth. easyfsl is not a project dependency: ``pip install --no-deps easyfsl==1.5.0``
for its rows. Refresh the committed table with ``python -m benchmarks.studies.sampler_speed --out benchmarks/results``.
The ``fewshot: `L2LTasks.sample``` row is this project's sampler served in learn2learn's task form
(:mod:`fewshot.sampling.l2l`), split by learn2learn's ``partition_task``: what a learn2learn loop gets when
it switches sampler. easyfsl's TaskSampler calls ``Sampler.__init__(data_source=None)``, which torch 2.14
rejects; :class:`_AcceptsDataSource` works around it in this script only.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import itertools
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from benchmarks.studies.outdir import OUT_HELP, output_folder
from fewshot import EpisodeSampler
from fewshot.evaluation import episodic_eval
from fewshot.utils.io import atomic_write_text
from fewshot.utils.runinfo import cpu_model

WAY, SHOT, QUERY, DIM = 5, 5, 15, 64
DATASETS = {"11k": (11_000, 120), "1M": (1_000_000, 10_000)}  # items, classes
KINDS = ("index-only", "loaded", "full eval")
ENDLESS = 10**9  # samplers are built once with this many episodes; a timed run takes the first n
Rows = dict[tuple[str, str], tuple[Callable[[int], None], str]]  # (kind, name) -> (run n episodes, delivers)
ONE_BY_ONE = "; the dataset is indexed item by item"
LISTED = WAY * (SHOT + QUERY)
EPISODE = f"support [{WAY * SHOT}, {DIM}] + labels, query [{WAY * QUERY}, {DIM}] + labels"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--seconds", type=float, default=0.6, help="target duration of one measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help=OUT_HELP)
    return parser


class FeatureDataset(Dataset):
    """Cached features in memory: ``__getitem__`` returns ``(x [d], label)`` as the anchors expect."""

    def __init__(self, features: torch.Tensor, labels: np.ndarray) -> None:
        self.features, self.labels = features, labels
        self.label_list = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.features[i], self.label_list[i]

    def get_labels(self) -> list[int]:  # easyfsl's FewShotDataset interface
        return self.label_list


class BatchedFeatureDataset(FeatureDataset):
    """The same data with ``__getitems__``: the DataLoader fetches a whole episode with one gather."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.asarray(indices))
        return self.features[idx], self.label_tensor[idx]

    @property
    def label_tensor(self) -> torch.Tensor:
        if not hasattr(self, "_label_tensor"):
            self._label_tensor = torch.as_tensor(self.labels)
        return self._label_tensor


def long_tail(n_items: int, n_classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Zipf-like class sizes (>= 20, so every class fits a 5-shot 15-query episode), shuffled, with
    features = class centre + noise so that the evaluation's accuracy is a sane number."""
    weights = np.arange(1, n_classes + 1) ** -1.1
    sizes = SHOT + QUERY + np.floor(weights / weights.sum() * (n_items - (SHOT + QUERY) * n_classes)).astype(int)
    sizes[0] += n_items - sizes.sum()
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes))
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, DIM, generator=gen)
    features = centres[torch.from_numpy(labels)] + 1.5 * torch.randn(n_items, DIM, generator=gen)
    return features, labels


def our_rows(features: torch.Tensor, labels: np.ndarray, seed: int) -> Rows:
    plain, batched = FeatureDataset(features, labels), BatchedFeatureDataset(features, labels)
    sampler = EpisodeSampler(labels, WAY, SHOT, QUERY, ENDLESS, seed=seed)

    def iterate(n: int) -> None:
        for _ in itertools.islice(sampler, n):
            pass

    def vectorised(n: int) -> None:
        for start in range(0, n, 1024):
            sampler.sample_batch(start, min(1024, n - start))

    def loader(ds: Dataset) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in itertools.islice(DataLoader(ds, batch_sampler=sampler, collate_fn=sampler.collate), n):
                pass
        return run

    def gathered(n: int) -> None:
        for start in range(0, n, 1024):
            idx = sampler.sample_batch(start, min(1024, n - start))
            support = features.index_select(0, torch.from_numpy(idx[:, :, :SHOT].reshape(-1)))
            query = features.index_select(0, torch.from_numpy(idx[:, :, SHOT:].reshape(-1)))
            support.view(len(idx), WAY, SHOT, DIM), query.view(len(idx), WAY * QUERY, DIM)

    def evaluate(n: int) -> None:
        first_n = copy.copy(sampler)  # shares the class index; only the episode count differs
        first_n.n_episodes = n
        episodic_eval(features, labels, first_n, device="cpu", progress=False)

    return {
        ("index-only", "fewshot: iterate the sampler"): (iterate, f"a list of {LISTED} ints per episode"),
        ("index-only", "fewshot: `sample_batch`"): (vectorised, f"int64 [1024, {WAY}, {SHOT + QUERY}] per call"),
        ("loaded", "fewshot: DataLoader, per-item `__getitem__`"): (
            loader(plain), f"`Episode`: {EPISODE}, class ids{ONE_BY_ONE}"),
        ("loaded", "fewshot: DataLoader, `__getitems__`"): (
            loader(batched), f"`Episode` as above; the dataset gathers an episode's {LISTED} items at once"),
        ("loaded", "fewshot: `sample_batch` + gather"): (
            gathered, f"support [1024, {WAY}, {SHOT}, {DIM}] and query [1024, {WAY * QUERY}, {DIM}] per call "
            "(labels implicit: way = position)"),
        ("full eval", "fewshot: `episodic_eval`"): (evaluate, "accuracy of every episode, mean and ci95"),
    }


def per_episode_accuracy(support: torch.Tensor, s_y: torch.Tensor, query: torch.Tensor, q_y: torch.Tensor) -> float:
    """The anchors' full-eval maths, one episode at a time: class-mean prototypes, nearest by distance."""
    protos = torch.zeros(WAY, support.shape[1]).index_add_(0, s_y, support) / SHOT
    return (torch.cdist(query, protos).argmin(dim=1) == q_y).float().mean().item()


class _AcceptsDataSource(Sampler):
    """Goes between easyfsl's TaskSampler and torch's Sampler in the MRO: TaskSampler calls
    ``Sampler.__init__(data_source=None)``, which torch 2.14 no longer accepts. Benchmark-only fix."""

    def __init__(self, data_source: object = None) -> None:
        super().__init__()


def easyfsl_rows(ds: FeatureDataset) -> Rows:
    from easyfsl.samplers import TaskSampler

    class PatchedTaskSampler(TaskSampler, _AcceptsDataSource):
        pass

    sampler = PatchedTaskSampler(ds, n_way=WAY, n_shot=SHOT, n_query=QUERY, n_tasks=ENDLESS)

    def episodes(n: int):
        return itertools.islice(DataLoader(ds, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn), n)

    def iterate(n: int) -> None:
        for _ in itertools.islice(sampler, n):
            pass

    def loaded(n: int) -> None:
        for _ in episodes(n):
            pass

    def evaluate(n: int) -> None:
        for support, s_y, query, q_y, _ in episodes(n):
            per_episode_accuracy(support, s_y, query, q_y)

    return {("index-only", "easyfsl TaskSampler: iterate"): (iterate, f"a list of {LISTED} ints per episode"),
            ("loaded", "easyfsl TaskSampler: DataLoader + `episodic_collate_fn`"): (
                loaded, f"{EPISODE}, class ids{ONE_BY_ONE}"),
            ("full eval", "easyfsl TaskSampler: loaded + per-episode maths"): (evaluate, "accuracy of every episode")}


def learn2learn_rows(ds: FeatureDataset, seed: int) -> Rows:
    import learn2learn as l2l
    from learn2learn.data.transforms import FusedNWaysKShots, LoadData, RemapLabels

    from fewshot.sampling.l2l import L2LTasks

    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ds.label_list):
        by_class.setdefault(y, []).append(i)
    meta = l2l.data.MetaDataset(ds, labels_to_indices=by_class)  # given, so it needn't load every item
    transforms = [FusedNWaysKShots(meta, n=WAY, k=SHOT + QUERY), LoadData(meta), RemapLabels(meta)]
    taskset = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1)

    def iterate(n: int) -> None:
        for _ in range(n):
            taskset.sample_task_description()

    def loaded(n: int) -> None:
        for _ in range(n):
            l2l.data.partition_task(*taskset.sample(), shots=SHOT)

    def evaluate(n: int) -> None:
        for _ in range(n):
            (support, s_y), (query, q_y) = l2l.data.partition_task(*taskset.sample(), shots=SHOT)
            per_episode_accuracy(support, s_y, query, q_y)

    tasks = L2LTasks(ds, EpisodeSampler(ds.labels, WAY, SHOT, QUERY, ENDLESS, seed=seed))

    def adapter(n: int) -> None:  # the one-line switch of a learn2learn loop to this project's sampler
        for _ in range(n):
            l2l.data.partition_task(*tasks.sample(), shots=SHOT)

    return {("index-only", "learn2learn Taskset: `sample_task_description`"): (
                iterate, f"a list of {LISTED} DataDescription objects"),
            ("loaded", "learn2learn Taskset: `sample` + `partition_task`"): (loaded, f"{EPISODE}{ONE_BY_ONE}"),
            ("full eval", "learn2learn Taskset: loaded + per-episode maths"): (evaluate, "accuracy of every episode"),
            ("loaded", "fewshot: `L2LTasks.sample` + learn2learn's `partition_task`"): (
                adapter, f"{EPISODE}{ONE_BY_ONE}; learn2learn's `[X, y]` task form")}


ANCHORS = {"easyfsl": lambda ds, seed: easyfsl_rows(ds), "learn2learn": learn2learn_rows}


def anchor_versions() -> dict[str, str]:
    out = {}
    for name in ANCHORS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def calibrate(run: Callable[[int], None], seconds: float) -> int:
    """Episodes that take about ``seconds``, from a warm-up run and a second, timed one (>= 0.1 s)."""
    n = 32
    run(n)  # warm-up: first calls pay for lazy initialisation
    while True:
        t = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t
        if dt > 0.1 or n > 10**6:
            return max(100, int(n / dt * seconds))
        n *= 4


def bench_dataset(name: str, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    n_items, n_classes = DATASETS[name]
    features, labels = long_tail(n_items, n_classes, args.seed)
    rows = our_rows(features, labels, args.seed)
    missing = []
    for anchor, make in ANCHORS.items():
        try:
            rows.update(make(FeatureDataset(features, labels), args.seed))
        except ImportError as err:
            missing.append(f"{anchor} ({type(err).__name__}: {err})")
    random.seed(args.seed)  # the anchors draw from the global `random`; seed it for repeatable runs
    steps = tqdm(total=len(rows) * (args.repeats + 1), desc=f"{name}", unit="run")
    sizes = {}
    for key, (run, _) in rows.items():
        sizes[key] = calibrate(run, args.seconds)
        steps.update()
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in rows}
    for _ in range(args.repeats):
        for key, (run, _) in rows.items():
            t = time.perf_counter()
            run(sizes[key])
            rates[key].append(sizes[key] / (time.perf_counter() - t))
            steps.update()
    steps.close()
    table = [
        {"dataset": name, "kind": kind, "row": row, "delivers": rows[(kind, row)][1], "episodes": sizes[(kind, row)],
         "median": statistics.median(r), "min": min(r), "max": max(r)}
        for (kind, row), r in rates.items()
    ]
    return table, missing


def best(table: list[dict], kind: str, ours: bool) -> dict | None:
    rows = [r for r in table if r["kind"] == kind and r["row"].startswith("fewshot") == ours]
    return max(rows, key=lambda r: r["median"]) if rows else None


def ratio_lines(tables: list[dict], names: list[str]) -> tuple[list[str], float | None]:
    """One line per comparison; returns them and the headline (the smallest best-loaded ratio)."""
    lines, loaded = [], []
    for name in names:
        rows = [r for r in tables if r["dataset"] == name]
        pairs = [(kind, best(rows, kind, True)) for kind in KINDS]
        pairs += [("loaded, like for like", r) for r in rows
                  if r["row"].startswith(("fewshot: DataLoader", "fewshot: `L2LTasks"))]
        for kind, ours in pairs:
            anchor = best(rows, kind.split(",")[0], False)
            if anchor is None:
                lines.append(f"- {name} {kind}: {ours['row']} {ours['median']:,.0f}/s; no anchor to compare with")
                continue
            ratio = ours["median"] / anchor["median"]
            lines.append(f"- {name} {kind}: {ours['row']} {ours['median']:,.0f}/s over {anchor['row']} "
                         f"{anchor['median']:,.0f}/s = **{ratio:.1f}x**")
            if kind == "loaded":
                loaded.append(ratio)
    return lines, min(loaded) if loaded else None


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def render(tables: list[dict], missing: list[str], ratios: list[str], headline: float | None,
           args: argparse.Namespace, load: tuple[float, float]) -> str:
    command = " ".join(["python -m benchmarks.studies.sampler_speed", *map(shlex.quote, sys.argv[1:])])
    evals = [r for r in tables if r["row"] == "fewshot: `episodic_eval`"]
    lines = [
        "# Sampler and episodic-evaluation speed",
        "",
        f"Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {machine()}; torch threads: {torch.get_num_threads()} (episodic_eval also runs one "
        f"index-prefetch thread); load average (1 min): {load[0]:.2f} before, {load[1]:.2f} after.",
        f"- Python {platform.python_version()} ({sys.prefix}), torch {torch.__version__}, numpy {np.__version__}; "
        + ", ".join(f"{k} {v}" for k, v in anchor_versions().items()) + ".",
        f"- Anchors missing: {', '.join(missing) if missing else 'none'}.",
        f"- Data: in memory, {DIM}-d float32 features, Zipf-like class sizes (>= 20 items each), labels shuffled; "
        f"{WAY}-way {SHOT}-shot {QUERY}-query. Episodes/s: median of {args.repeats} repeats of about "
        f"{args.seconds} s each, interleaved row by row (min-max in brackets). Samplers are built before timing.",
        "",
        "Kinds: **index-only** = which items form each episode; **loaded** = the episode's features in tensors,",
        "split into support and query, with labels (the `sample_batch + gather` row gives labels only by position);",
        "**full eval** = loaded, then class-mean prototypes, distances and accuracy of every episode (the anchors have",
        "no evaluator, so their row runs the same per-episode maths on their loaded episodes).",
        "",
    ]
    for name in dict.fromkeys(r["dataset"] for r in tables):
        n_items, n_classes = DATASETS[name]
        lines += [f"## {n_items:,} items in {n_classes:,} classes", "",
                  "| kind | implementation | delivers | episodes/s | (min-max) | episodes per run |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['kind']} | {r['row']} | {r['delivers']} | {r['median']:,.0f} | "
                  f"({r['min']:,.0f}-{r['max']:,.0f}) | {r['episodes']:,} |" for r in tables if r["dataset"] == name]
        lines.append("")
    lines += ["## Ratios (medians)", "", *ratios, "", "## Targets", ""]
    lines.append(f"- Loaded episodes/s >= 20x the best anchor: smallest ratio over the datasets "
                 f"{'n/a' if headline is None else f'{headline:.1f}x'}"
                 f" ({'n/a' if headline is None else 'met' if headline >= 20 else 'NOT met'}).")
    lines += [f"- Full episodic evaluation >= 20,000 episodes/s: {r['dataset']} {r['median']:,.0f}/s "
              f"({'met' if r['median'] >= 20_000 else 'NOT met'})." for r in evals]
    lines += ["", f"ratio_vs_best_anchor={'nan' if headline is None else f'{headline:.1f}'}"]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> float | None:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    tables, missing = [], []
    for name in args.datasets:
        table, missing = bench_dataset(name, args)
        tables += table
    ratios, headline = ratio_lines(tables, args.datasets)
    text = render(tables, missing, ratios, headline, args, (load_before, os.getloadavg()[0]))
    folder = output_folder("sampler_speed", args.out)
    if folder is not None:
        atomic_write_text(folder / "sampler_speed.md", text)
        print(f"wrote {folder / 'sampler_speed.md'}", file=sys.stderr)  # stdout's last line stays the ratio
    print(text, end="")  # its last line is ratio_vs_best_anchor=<x>
    return headline


if __name__ == "__main__":
    main(get_args_parser().parse_args())
