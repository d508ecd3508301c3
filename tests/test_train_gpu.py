"""The GPU path of the Ray Train job (device placement, NCCL, bf16 autocast): runs wherever CUDA is present."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from musicrec.config import load_config
from train_lake import write_lake

pytestmark = [
    pytest.mark.ray,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_gsasrec_trains_on_gpu_with_bf16(tmp_path):
    import ray

    from musicrec.train.sequential import run_sequential_train

    lake = write_lake(tmp_path / "lake")
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    try:
        config = load_config(overrides=(
            f"lake.root={lake}", "dataset.name=walks", f"mlflow.local_dir={tmp_path / 'mlflow'}",
            f"train.storage_path={tmp_path / 'ray'}", "model.family=gsasrec", "model.embedding_dim=32",
            "model.ffn_dim=32", "model.num_blocks=1", "model.max_len=12", "model.batch_size=32",
            "model.negatives=8", "model.gbce_alpha=null", "model.max_epochs=4", "model.learning_rate=0.01",
            "train.use_gpu=true", "train.gpus_per_worker=1.0", "train.workers=1", "train.mixed_precision=true",
            "runtime.log_level=WARNING",
        ))
        summary = run_sequential_train(config)
    finally:
        ray.shutdown()
    assert summary["device"].startswith("cuda") and summary["bf16"] is True
    losses = [h["loss"] for h in summary["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert 0.0 < summary["val_ndcg_at_100"] <= 1.0
