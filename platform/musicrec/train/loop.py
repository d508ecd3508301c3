"""The per-worker loop of Ray Train for the sequential families.

It is :meth:`SequentialModel.fit` spread over data-parallel workers, built from the same pieces
(``init_network``, ``make_optimizer``, ``batches``, ``network.forward`` returning the loss,
the per-epoch dropout seed) so the two cannot drift; what it adds is what a cluster needs:
DDP (Gloo on CPUs, NCCL on GPUs, through ``ray.train.torch.prepare_model``), bf16 autocast on
GPUs, checkpoints that resume exactly, and validation on rank 0 with early stopping that every
rank obeys.

A checkpoint holds the network, the optimiser, the loop state (epoch, step inside the epoch,
global step, the epoch's loss so far, best metric, epochs without improvement, history), the
best epoch's weights and every rank's torch RNG state. The sampler needs no state of its own:
it is a pure function of (seed, epoch) and the worker's shard, so resuming skips the batches
the epoch had already consumed.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from musicrec.models import FittedModel, ItemIndex, TrainingData, family_class
from musicrec.models.sequential.families import derived_seed
from musicrec.train.flops import peak_flops, step_flops
from musicrec.train.tasks import validation_examples, validation_ndcg

VALIDATION_METRIC = "val_ndcg_at_100"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, fixed by the driver (picklable; large arrays travel as object refs)."""

    family: str
    model_config: dict
    seed: int
    items: Any  # ObjectRef of a fixed vocabulary's raw ids (fine-tuning); None: the training rows' items
    sharding: str
    batch_size: int
    max_epochs: int
    patience: int
    checkpoint_every_steps: int
    mixed_precision: bool
    # Validation: the val users of `task` under `protocol` (the holdout's, or the GTS validation
    # window), the model's input derived as for `sequence`/`k`.
    lake_root: str
    dataset: str
    task: str
    sequence: str
    k: int
    val_batch_size: int
    parent_state: Any = None  # ObjectRef of a parent model's state arrays (fine-tuning)
    fail_at_step: int | None = None
    fail_marker: str = ""
    protocol: str = "holdout"
    numpy_hugepages: bool = False


@dataclass
class LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss: float = 0.0
    epoch_steps: int = 0
    epoch_positions: int = 0
    epoch_tokens: int = 0  # input positions computed, padding included (tokens/s)
    epoch_flops: float = 0.0  # model FLOPs (musicrec.train.flops)
    best_metric: float = -math.inf
    best_epoch: int = -1
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = ""  # where the last attempt trained ("cpu", "cuda:0") and whether under bf16
    bf16: bool = False


def build_model(spec: WorkerSpec):
    cls = family_class(spec.family)
    return cls(cls.Config.model_validate(spec.model_config), seed=spec.seed)


def _save(
    directory: Path, rank: int, network, optimizer, state: LoopState, best: dict | None, items: ItemIndex
) -> None:
    # Every rank writes its RNG state; Ray Train merges the ranks' folders into one checkpoint.
    torch.save(torch.get_rng_state(), directory / f"rng_rank{rank}.pt")
    if rank == 0:
        torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": None},
                   directory / "train.pt")
        if best is not None:
            torch.save(best, directory / "best.pt")
        (directory / "state.json").write_text(json.dumps(asdict(state)))
        np.save(directory / "item_ids.npy", items.ids)


def load_state(directory: Path) -> LoopState:
    return LoopState(**json.loads((directory / "state.json").read_text()))


def _restore(directory: Path, rank: int, network, optimizer, device) -> tuple[LoopState, dict | None]:
    saved = torch.load(directory / "train.pt", map_location=device, weights_only=True)
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(torch.load(directory / f"rng_rank{rank}.pt", weights_only=True))
    best_path = directory / "best.pt"
    best = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.exists() else None
    return load_state(directory), best


def _report(
    metrics: dict, rank: int, network, optimizer, state: LoopState, best: dict | None, items: ItemIndex
) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        _save(Path(tmp), rank, network, optimizer, state, best, items)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{state.global_step:010d}",
        )


def _all_reduce(values: list[float], device, op=None) -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor.tolist()


def _agreed(batches, device):
    """The batches while every rank still has one: shards of users differ in size, and DDP needs
    every rank to take the same number of steps (a one-number all-reduce per step)."""
    for batch in itertools.chain(batches, itertools.repeat(None)):
        has = _all_reduce([0.0 if batch is None else 1.0], device, dist.ReduceOp.MIN if dist.is_initialized() else None)
        if has[0] < 1.0:
            return
        yield batch


def _vocabulary(local_items: np.ndarray) -> ItemIndex:
    """The distinct items of every rank's shard: each rank holds only its users, and all must agree."""
    distinct = np.unique(local_items)
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, distinct)
        distinct = np.unique(np.concatenate(gathered))
    return ItemIndex(distinct)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _peak_rss_mb() -> list[float]:
    """Every rank's peak resident memory so far (MB), gathered on all ranks."""
    mine = peak_rss_mb()
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [mine]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def _validate(model, spec: WorkerSpec, items: ItemIndex, examples) -> float:
    fitted = FittedModel("validation", model, items, spec.sequence, spec.k, (spec.task,))
    return validation_ndcg(fitted, examples, spec.val_batch_size, spec.protocol)


def train_worker(loop_config: dict) -> None:
    """``train_loop_per_worker`` of the TorchTrainer."""
    import ray
    import ray.train
    import ray.train.torch

    from musicrec.runtime.hugepages import apply_numpy_hugepages
    from musicrec.train.stream import collect_rows

    spec: WorkerSpec = loop_config["spec"]
    apply_numpy_hugepages(spec.numpy_hugepages)  # a cluster's workers do not inherit the driver's environment
    started = time.perf_counter()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    amp = spec.mixed_precision and device.type == "cuda"

    uids, raw = collect_rows(ray.train.get_dataset_shard(f"rank{rank}").iter_batches(batch_format="pyarrow"))
    read = time.perf_counter() - started
    items = ItemIndex(ray.get(spec.items)) if spec.items is not None else _vocabulary(raw.values)
    data = TrainingData(items.map_rows(raw)[0], len(items))
    model = build_model(spec)
    model.init_network(len(items))
    if spec.parent_state is not None:
        model.load_state(ray.get(spec.parent_state))
    network = model.network
    trained = ray.train.torch.prepare_model(network)  # to the device; DDP when world > 1
    optimizer = model.make_optimizer(network.parameters())

    state, best = LoopState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state, best = _restore(Path(directory), rank, network, optimizer, device)
    state.device, state.bf16 = str(device), amp
    log.info("rank %d/%d: %d users, %d events read in %.1f s; %d items; ready after %.1f s", rank, world, len(uids),
             len(raw.values), read, len(items), time.perf_counter() - started)

    examples = None
    if rank == 0:
        examples = validation_examples(spec.lake_root, spec.dataset, spec.protocol, spec.task)
    # Replicated data: the sampler splits each global batch by rank. Sharded users: each rank
    # samples its own users with its share of the global batch.
    if spec.sharding == "replicated":
        split = {"rank": rank, "world_size": world, "batch_size": spec.batch_size}
    else:
        split = {"rank": 0, "world_size": 1, "batch_size": max(spec.batch_size // world, 1)}

    while state.epoch < spec.max_epochs and state.stale < spec.patience:
        epoch = state.epoch
        epoch_started = time.perf_counter()
        if state.step_in_epoch == 0:
            # The dropout seed of fit(); other ranks get their own stream.
            torch.manual_seed(derived_seed(spec.seed, 1, epoch) if rank == 0 else derived_seed(spec.seed, 1, epoch, rank))
        network.train()
        batches = itertools.islice(model.batches(data, epoch, **split), state.step_in_epoch, None)
        for batch in _agreed(batches, device):
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss = trained(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # One all-reduce per step for the reported loss, the positions (loss terms) trained, the
            # tokens computed and the model FLOPs.
            summed = _all_reduce([float(loss.detach()), float(positions(batch, model.n_items)),
                                  float(batch["inputs"].numel()), step_flops(model.config, batch, model.n_items)], device)
            state.epoch_loss += summed[0] / world
            state.epoch_positions += int(summed[1])
            state.epoch_tokens += int(summed[2])
            state.epoch_flops += summed[3]
            state.epoch_steps += 1
            state.step_in_epoch += 1
            state.global_step += 1
            if spec.fail_at_step == state.global_step and rank == 0 and not Path(spec.fail_marker).exists():
                Path(spec.fail_marker).parent.mkdir(parents=True, exist_ok=True)
                Path(spec.fail_marker).write_text(str(state.global_step))
                raise RuntimeError(f"injected failure at step {state.global_step} (train.fail_at_step)")
            if spec.checkpoint_every_steps and state.global_step % spec.checkpoint_every_steps == 0:
                _report({"epoch": epoch, "step": state.global_step}, rank, network, optimizer, state, best, items)

        seconds = time.perf_counter() - epoch_started
        record = {"epoch": epoch, "loss": state.epoch_loss / max(state.epoch_steps, 1), "seconds": seconds,
                  "positions": state.epoch_positions, "positions_per_second": state.epoch_positions / seconds,
                  "tokens_per_second": state.epoch_tokens / seconds, "model_tflops": state.epoch_flops / seconds / 1e12,
                  "worker_peak_rss_mb": _peak_rss_mb()}
        peak = peak_flops(device)
        if peak:  # model FLOPs utilisation of every rank's device together
            record["mfu"] = state.epoch_flops / seconds / (peak * world)
        metric = [0.0]
        if rank == 0:
            metric = [_validate(model, spec, items, examples)]
            network.train()
        # Rank 0 decides; every rank applies the same metric so all stop at the same epoch.
        if dist.is_initialized() and world > 1:
            tensor = torch.tensor(metric, dtype=torch.float64, device=device)
            dist.broadcast(tensor, src=0)
            metric = tensor.tolist()
        record["metric"] = metric[0]
        if metric[0] > state.best_metric:
            state.best_metric, state.best_epoch, state.stale = metric[0], epoch, 0
            if rank == 0:
                best = {key: value.detach().cpu().clone() for key, value in network.state_dict().items()}
        else:
            state.stale += 1
        state.history.append(record)
        state.epoch, state.step_in_epoch, state.epoch_loss, state.epoch_steps = epoch + 1, 0, 0.0, 0
        state.epoch_positions, state.epoch_tokens, state.epoch_flops = 0, 0, 0.0
        _report(
            {"epoch": epoch, "step": state.global_step, "loss": record["loss"], VALIDATION_METRIC: metric[0],
             "best_epoch": state.best_epoch},
            rank, network, optimizer, state, best, items,
        )


def checkpoint_items(directory: Path) -> ItemIndex:
    return ItemIndex(np.load(directory / "item_ids.npy", allow_pickle=False))


def best_weights(directory: Path) -> dict[str, torch.Tensor] | None:
    path = directory / "best.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def positions(batch: dict[str, torch.Tensor], pad: int) -> int:
    """Trained positions (loss terms) in a batch: targets that are not padding."""
    return int((batch["targets"] != pad).sum())

