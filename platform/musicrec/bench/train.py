"""``musicrec bench train``: gSASRec training throughput of the Ray Train job against a bare loop.

Both sides train the same model (the gSASRec preset of ``conf/models/gsasrec.yaml`` unless
overridden) with the same global batch on the same synthetic sequences for one epoch:

- bare: one process, ``model.batches`` -> ``network(batch)`` -> backward -> AdamW step, nothing else;
- Ray Train: the real ``musicrec train`` job (Ray Data from a Delta table, TorchTrainer, DDP,
  checkpoint and validation at the epoch's end) with 1 and with 2 workers.

Throughput is trained positions (loss terms) per second over the epoch's steps, as the job's
own epoch record measures it (start-up, reading and validation are reported apart, as the job's
wall time). Ratio = Ray Train / bare at the same worker count (1); the 2-worker figure shows
scaling, which on a 2-core machine shared with other work is bounded by the cores.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from musicrec.config import Config


def synthetic_lake(root: Path, dataset: str, n_users: int, n_items: int, length: int, seed: int) -> Path:
    """`sequences` (holdout, lh_track, k=1) and `holdout_examples` (T1) of random walks over the catalogue."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    seqs = [(s + np.cumsum(rng.integers(1, 4, length))) % n_items for s in starts]
    split = np.where(np.arange(n_users) % 20 == 0, "val", np.where(np.arange(n_users) % 20 == 1, "test", "train"))
    uids = np.arange(n_users, dtype=np.int64)
    lake = root / dataset
    write_deltalake(
        lake / "sequences",
        pa.table({
            "protocol": ["holdout"] * n_users, "uid": uids, "name": ["lh_track"] * n_users,
            "k": pa.array([1] * n_users, pa.int32()), "split": split,
            "items": pa.array([s[:-10] if sp != "train" else s for s, sp in zip(seqs, split, strict=True)],
                              pa.list_(pa.int64())),
        }),
        partition_by=["protocol", "name", "k"],
    )
    held = split != "train"
    write_deltalake(
        lake / "holdout_examples",
        pa.table({
            "uid": uids[held], "task": ["T1"] * int(held.sum()), "split": split[held],
            "history_items": pa.array([s[:-10] for s, h in zip(seqs, held, strict=True) if h], pa.list_(pa.int64())),
            "targets": pa.array([s[-10:] for s, h in zip(seqs, held, strict=True) if h], pa.list_(pa.int64())),
        }),
        partition_by=["task"],
    )
    return root


def bare_loop(config: Config, lake: Path, dataset: str, steps: int | None = None) -> dict[str, Any]:
    """One epoch (or ``steps`` batches) of the plain PyTorch loop over the same training rows, on
    the GPU under the job's settings (``train.use_gpu``, ``train.mixed_precision``) where one is."""
    import torch

    from musicrec.arrays import Ragged
    from musicrec.lake.readers import load_table
    from musicrec.models import ItemIndex, TrainingData, family_class
    from musicrec.train.flops import peak_flops, step_flops
    from musicrec.train.loop import positions
    from musicrec.train.sequential import model_config

    table = load_table(str(lake), dataset, "sequences", [("split", "=", "train")]).sort_by("uid")
    raw = Ragged.from_arrow(table["items"])
    items = ItemIndex.from_items(raw.values)
    data = TrainingData(items.map_rows(raw)[0], len(items))
    cls = family_class(config.model.family)
    model = cls(cls.Config.model_validate(model_config(config, config.model.family)), seed=config.seed)
    model.init_network(len(items))
    device = torch.device("cuda" if config.train.use_gpu and torch.cuda.is_available() else "cpu")
    amp = config.train.mixed_precision and device.type == "cuda"
    network = model.network.to(device)
    optimizer = model.make_optimizer(network.parameters())
    network.train()
    trained = tokens = flops = 0
    started = time.perf_counter()
    for batch in itertools.islice(model.batches(data, 0), steps):
        trained += positions(batch, model.n_items)
        tokens += batch["inputs"].numel()
        flops += step_flops(model.config, batch, model.n_items)
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = network(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = peak_flops(device)
    return {"device": str(device), "bf16": amp, "positions": trained, "seconds": seconds,
            "positions_per_second": trained / seconds, "tokens_per_second": tokens / seconds,
            "model_tflops": flops / seconds / 1e12, "mfu": flops / seconds / peak if peak else None}


def bench_train(config: Config, workdir: Path, n_users: int = 4096, n_items: int = 160_000,
                length: int = 201, workers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Bare loop and the Ray Train job with each worker count, one epoch each, same model and batch.

    Each side gets one thread per worker (Ray gives a 1-CPU worker OMP_NUM_THREADS=1; the bare
    loop is set to 1), so the 1-worker ratio is the job's overhead and not a thread-count artefact.
    """
    import torch

    from musicrec.config import load_config, to_yaml
    from musicrec.train.sequential import THROUGHPUT, run_sequential_train

    lake = synthetic_lake(workdir / "lake", "bench-train", n_users, n_items, length, config.seed)
    config_file = workdir / "base.yaml"
    config_file.write_text(to_yaml(config))
    overrides = [
        # MLflow stays the benchmark's store: each training job is a run nested in the benchmark's.
        f"lake.root={lake}", "dataset.name=bench-train",
        f"train.storage_path={workdir / 'ray'}", "model.max_epochs=1", "train.sharding=replicated",
        "train.cpus_per_worker=1.0",
        # Logical CPUs: one per worker plus one for Ray Data's read tasks.
        f"runtime.ray.num_cpus={max(workers) + 1}",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bare = bare_loop(load_config([config_file], overrides), lake, "bench-train")
    finally:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {"users": n_users, "items": n_items, "length": length, "batch_size": config.model.batch_size}
    out.update({f"bare.{key}": value for key, value in bare.items() if key != "positions" and value is not None})
    for w in workers:
        started = time.perf_counter()
        summary = run_sequential_train(load_config([config_file], [*overrides, f"train.workers={w}"]),
                                       run_name=f"bench-train-{w}w")
        record = summary["history"][0]
        for key in THROUGHPUT:
            if key in record:
                out[f"ray_{w}w.{key}"] = record[key]
        out[f"ray_{w}w.epoch_seconds"] = record["seconds"]
        out[f"ray_{w}w.job_seconds"] = time.perf_counter() - started
        out[f"ray_{w}w.ratio_to_bare"] = record["positions_per_second"] / bare["positions_per_second"]
        out[f"ray_{w}w.worker_peak_rss_mb"] = max(record["worker_peak_rss_mb"])
    return out
