"""Training and the benchmark under torchrun: two CPU processes (gloo) against one; a distributed smoke run
killed mid-run and resumed under torchrun.

Tolerances:

- tiny models (conv + batch norm + linear head, supervised and ProtoNet; MAML on features), one epoch with
  class weights, label smoothing, augmentation and uneven shards, end with the weights of one process to
  ``WEIGHT_ATOL`` = 1e-9. They train in float64, and the bound follows from float64's arithmetic: see
  :func:`test_two_processes_train_a_tiny_model_to_the_weights_of_one_process`;
- the smoke benchmark: methods on frozen features (ImageNet centroids, text, MAML and ANIL meta-trained on
  frozen features) give the single-process per-class accuracies exactly. Methods on backbones trained here
  do not, and cannot: conv4 training at the smoke's learning rates is chaotic, so float32 rounding is
  amplified to visible weight changes (one epoch with channels_last on and off, one process both times,
  differs by 0.025 in the weights; one and two processes by 0.018). Their per-class accuracies then differ
  as much as any two rounding variants (up to 0.5 on classes with 2-8 test images); we check their column
  means to 0.15 (measured <= 0.06), which catches a shard that never trained or a wrong loss scale.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from benchmarks.run import get_args_parser, main
from fewshot.utils import distributed

SMOKE = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "smoke.toml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
WEIGHT_ATOL = 1e-9  # float64 unit roundoff 1.1e-16 x an epoch's amplification (<= 1.5e3) x a margin of 6000
FROZEN = ("centroid_imagenet", "text", "maml", "anil")  # their per-class accuracies must match exactly
TRAINED = ("two_stage", "protonet", "baseline_centroid")
COLUMN_MEAN_TOL = 0.15
# The single-process reference: the frozen-feature methods and a few on trained backbones.
REFERENCE_METHODS = [*FROZEN, *TRAINED]


class TinyBackbone(nn.Module):
    """conv 3x3 (stride 2) + BatchNorm + ReLU + global average pool: [B, 3, H, W] -> [B, 8], in float64 (the
    pipeline's float32 images are widened, exactly, on the way in)."""

    out_dim = 8

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double())


def _train_three_objectives(images: np.ndarray, labels: np.ndarray) -> dict:
    """One epoch of each objective on tiny float64 models: {name: (state dict, history row)}."""
    from fewshot.methods import ProtoNet
    from fewshot.methods.maml import MAML
    from fewshot.models.classifier import Classifier
    from fewshot.training.episodic import EpisodeConfig, EpisodicObjective
    from fewshot.training.loop import TrainConfig, fit
    from fewshot.training.meta import MetaConfig, MetaObjective
    from fewshot.training.supervised import SupervisedObjective

    rows = np.arange(len(labels))
    first, rest = rows[labels < 8], rows[labels >= 8]  # training and validation classes of the episodic ones
    results = {}
    # 15 images a batch: shards of 8 and 7, class-weighted and smoothed (the mean's normaliser is the
    # batch's weight sum), augmented (the shards use the batch's random numbers).
    cfg = TrainConfig(epochs=1, batch_size=15, lr=0.05, warmup_epochs=0.0, class_weights="inverse",
                      label_smoothing=0.1, channels_last=False, device="cpu", val_fraction=0.2)
    model = Classifier(TinyBackbone(), int(labels.max()) + 1, seed=0).double()
    fit_result = fit(model, SupervisedObjective(images, labels, rows, cfg), cfg, None, progress=False)
    results["supervised"] = (model.state_dict(), fit_result.history[0])
    cfg = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0.0, channels_last=False, device="cpu")
    episodes = EpisodeConfig(n_way=5, n_shot=2, n_query=3, episodes_per_epoch=4, val_way=3, val_shot=1, val_query=2,
                             val_episodes=10)
    model = ProtoNet(TinyBackbone()).double()
    fit_result = fit(model, EpisodicObjective(images, labels, first, rest, episodes, cfg), cfg, None, progress=False)
    results["protonet"] = (model.state_dict(), fit_result.history[0])
    # Meta-batches of 3 tasks: 2 on rank 0, 1 on rank 1 (task i on rank i mod 2).
    feats = torch.randn(len(labels), 16, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=1, optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, device="cpu",
                      amp=False, channels_last=False)
    tasks = MetaConfig(n_way=3, n_shot=1, n_query=2, meta_batch=3, steps_per_epoch=3, val_way=3, val_shot=1,
                       val_query=2, val_episodes=6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MAML(nn.Sequential(nn.Linear(16, 8), nn.ReLU()).double(), inner_lr=0.1, adaptation_steps=2)
    objective = MetaObjective(feats, labels, first, rest, tasks, cfg)
    objective.features = objective.features.double()  # its float32 features, widened for the float64 model
    fit_result = fit(model, objective, cfg, None, progress=False)
    results["maml"] = (model.state_dict(), fit_result.history[0])
    return results


def _rank_worker(rank: int, world: int, port: int, images: np.ndarray, labels: np.ndarray, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    try:
        torch.save(_train_three_objectives(images, labels), f"{out}.{rank}")
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_a_tiny_model_to_the_weights_of_one_process(synthetic_cached, tmp_path, one_torch_thread):
    """One process and two compute the same epoch in different floating-point orders: the conv weight
    gradient of a batch of 15 against 8 + 7 images added by the all-reduce, torch's batch norm against
    :class:`~fewshot.training.distributed.GlobalBatchNorm`'s float64 sums, the loss normaliser, MAML's task
    gradients added in another order; and oneDNN / MKL choose kernels (so reduction orders) by shape and CPU.
    The runs differ by rounding, so the comparison needs a bound that holds for any CPU's kernels.

    Why float64. Through the ReLU the gradient is a discontinuous function of the weights: a pre-activation
    that changes sign switches its contribution to the gradient on or off, and momentum SGD integrates the
    jump over the rest of the epoch. In float32 the runs' pre-activations drift 2e-6..7e-5 apart by step 11,
    while the smallest over the epoch is 3.5e-6 from zero: whether one lands on the other side is a coin toss
    of the kernels' rounding. Measured on an AMD EPYC (Zen 4, AVX-512), in float32, one process at 1 thread
    against two processes, against itself at 2 threads, with channels_last, with AVX2 kernels
    (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) or with its conv init times 1 + 1e-7 noise: the supervised model
    ends <= 5e-6 (parameters) / 5e-5 (running statistics) away, or, where one pre-activation flipped at step
    11, 7.5e-5 / 1.4e-3 away (the 1-thread one-process run against all the others: the Intel Xeon failure's
    numbers). ProtoNet flips the same way (7.5e-5 with channels_last); MAML's float32 runs were equal only
    for this data (4 of 8 feature seeds differ, by <= 1.5e-8). No float32 tolerance is both safe and tight.

    The float64 bound. Rounding enters every step at the unit roundoff u; one epoch turns it into differences
    of A * u. Measured in float64 (one process against two, and against channels_last, 2 threads and AVX2
    kernels): <= 1.5e-14 in the parameters, <= 1.6e-13 in the running statistics (their centring cancels
    digits), so A <= 1.5e3; float32 without a flip gives A of that order (5e-5 / 6e-8 = 8e2). WEIGHT_ATOL = 1e-9
    = 1.1e-16 * 9e6 leaves a factor 6000 over that A for other CPUs' kernels. No flip in float64: the
    pre-activations drift <= 1.2e-12 apart, 3e6 times below the smallest |pre-activation| (3.4e-6; 56 lie
    within 1e-4 of zero over the epoch, so < 1e-6 are expected within the drift); the smallest top-2 logit
    gap (3.9e-4 in training, 4.7e-3 in validation) is as far above it, so accuracies and the best epoch are
    equal exactly. The inputs are equal bit for bit: the float32 augmentation works per image with the
    global batch's random numbers (checked for batches of 3..69 images split over 2 and 3 ranks).

    What it catches (measured by breaking the code; the largest parameter difference): rank 1's loss doubled
    9e-2; the gradients not multiplied by the world size 7e-2 (ProtoNet 4e-3, MAML under Adam 4e-6, below a
    tolerance of 1e-5); batch-norm statistics of the shard alone 5e-2 (ProtoNet 2e-3);
    rank 1's shard never training 9e-2 (ProtoNet 8e-3, MAML 4e-3); GlobalBatchNorm's statistics cast to
    float32 4e-8 (ProtoNet 2e-9); the loss shares computed in float32 6e-9 (running mean 6e-8).
    """
    images, labels = np.asarray(synthetic_cached.images), np.asarray(synthetic_cached.labels)
    one = _train_three_objectives(images, labels)
    out = tmp_path / "ranks"
    mp.spawn(_rank_worker, args=(2, _free_port(), images, labels, str(out)), nprocs=2)
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    for name, (state, row) in one.items():
        for key, value in state.items():
            assert not value.is_floating_point() or value.dtype == torch.float64, (name, key)  # the bound's premise
            # DDP keeps the ranks' replicas identical, bit for bit
            assert torch.equal(ranks[0][name][0][key], ranks[1][name][0][key]), (name, key)
            torch.testing.assert_close(ranks[0][name][0][key], value, atol=WEIGHT_ATOL, rtol=0, msg=f"{name} {key}")
        two = ranks[0][name][1]
        assert two["val_score"] == row["val_score"], name  # the same model choice
        assert two["train_acc"] == row["train_acc"], name  # the global batch's numbers, reduced over the ranks
        # The history sums the steps' losses in float32 (fit's accumulator): <= steps + 2 = 27 roundings of
        # 6e-8 each per run, 3.2e-6 between the two; the float64 losses themselves agree to 1e-13.
        assert two["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5), name


def test_one_process_creates_no_process_group_and_shards_nothing():
    assert not distributed.launched() and not distributed.is_distributed()
    assert distributed.describe() == {"world_size": 1, "backend": None}
    items = torch.arange(5)
    assert distributed.shard(items) is not None and torch.equal(distributed.shard(items), items)
    assert distributed.gather_shards(items, 5) is items
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_true(False) is False
    assert distributed.on_main(lambda: 7) == 7


def test_shards_are_positions_i_mod_world():
    items = list(range(7))
    assert [distributed.shard(items, of=3, at=r) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_objectives_refuse_batches_the_processes_cannot_share(synthetic_cached):
    from fewshot.training.loop import Objective, TrainConfig
    from fewshot.training.meta import MetaConfig, MetaObjective
    from fewshot.training.supervised import SupervisedObjective
    from fewshot.utils.errors import UserError

    labels = np.asarray(synthetic_cached.labels)
    supervised = SupervisedObjective(synthetic_cached.images, labels, np.arange(len(labels)),
                                     TrainConfig(batch_size=2, device="cpu"))
    supervised.distribute(1, 2)  # one image each: fine
    assert (supervised.rank, supervised.world) == (1, 2)
    with pytest.raises(UserError, match="batch_size"):
        supervised.distribute(0, 3)
    meta = MetaObjective(torch.zeros(len(labels), 4), labels, np.arange(len(labels)), [],
                         MetaConfig(n_way=2, n_shot=1, n_query=1, meta_batch=2, steps_per_epoch=1), TrainConfig())
    with pytest.raises(UserError, match="meta_batch"):
        meta.distribute(0, 3)

    class Custom(Objective):  # one that never learned to shard
        def steps_per_epoch(self) -> int:
            return 1

        def train_batches(self, epoch, generator):
            yield None

        def loss(self, model, batch):
            raise NotImplementedError

    with pytest.raises(UserError, match="one process"):
        Custom().distribute(0, 2)


def _torchrun(*args: str) -> list[str]:
    return [*TORCHRUN, "-m", "benchmarks.run", "--no-progress", *args]


@pytest.fixture(scope="module")
def torchrun_smoke(tmp_path_factory) -> tuple[Path, str]:
    """smoke.toml under ``torchrun --nproc_per_node=2`` (CPU, gloo), killed mid-run and resumed under torchrun:
    (run folder, the resumed run's stdout). One run serves every smoke test here (CI time)."""
    out = tmp_path_factory.mktemp("torchrun") / "smoke"
    proc = subprocess.Popen(_torchrun("--config", str(SMOKE), "--out", str(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    trigger = out / "two_stage" / "stage2_joint" / "last.pt"  # stages 1 and 2 done, the joint stage training
    deadline = time.monotonic() + 600
    while not trigger.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun stops its workers (what a cluster's scheduler sends)
    assert proc.wait(timeout=120) != 0
    assert trigger.exists(), "the run ended before reaching the kill point"
    assert not (out / "summary.json").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed: nothing recorded the end
    done = subprocess.run(_torchrun("--resume", str(out)), check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory) -> Path:
    """The smoke config in one process, for the methods the comparison needs."""
    out = tmp_path_factory.mktemp("one") / "smoke"
    methods = "methods=[" + ",".join(f'"{m}"' for m in REFERENCE_METHODS) + "]"
    main(get_args_parser().parse_args(["--config", str(SMOKE), "--out", str(out), "--no-progress", methods]))
    return out


def test_torchrun_smoke_writes_every_result_file_once_and_records_the_world(torchrun_smoke):
    out, stdout = torchrun_smoke
    for name in ("config.resolved.toml", "run.json", "per_class.csv", "summary.json", "summary.md",
                 "per_class_vs_train.png", "shots.png", "episodic.png"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".*.tmp*")), "a temporary file was left behind"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished"
    assert run["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert stdout.count("[eval_crt] running") == 1  # rank 0 alone logs


def test_torchrun_smoke_per_class_matches_one_process_within_the_stated_tolerance(torchrun_smoke,
                                                                                  one_process_reference):
    two = pd.read_csv(torchrun_smoke[0] / "per_class.csv")
    one = pd.read_csv(one_process_reference / "per_class.csv")
    both = one.merge(two, on=["class", "group"], how="left", suffixes=("", "@2"), validate="one_to_one")
    assert len(both) == len(one) and both["n_test@2"].notna().all()  # every reference row is in the torchrun run
    for col in ("n_train", "n_test", "bucket"):
        assert both[col].equals(both[f"{col}@2"]), col
    for method in FROZEN:
        for k in ("top1", "top5"):
            col = f"{method}/{k}"
            pd.testing.assert_series_equal(both[col], both[f"{col}@2"], check_names=False, obj=col)
    for method in TRAINED:
        col = f"{method}/top1"
        assert both[col].isna().equals(both[f"{col}@2"].isna()), col
        assert both[f"{col}@2"].dropna().between(0, 1).all(), col
        assert abs(both[col].mean() - both[f"{col}@2"].mean()) <= COLUMN_MEAN_TOL, col


def test_a_killed_torchrun_smoke_run_resumes_under_torchrun_to_completion(torchrun_smoke):
    out, stdout = torchrun_smoke
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["resumed"] is True
    assert {"stage1", "stage2"} <= set(run["reused_phases"])  # finished before the kill: read, not retrained
    assert "[stage1] finished earlier" in stdout
    assert (out / "two_stage" / "stage2_joint" / "best.pt").is_file()
