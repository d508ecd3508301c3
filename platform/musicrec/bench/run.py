"""``musicrec bench <name>``: run a benchmark of docs/benchmarks.md, print it, log it to MLflow.

Each benchmark compares two things in the same run on the same machine and reports the ratio;
absolute figures are logged for reference but never asserted (these machines are shared and noisy).
Results go to the MLflow experiment ``benchmarks`` (the verb's run, one nested run per size):
parameters (sizes, cores, versions), metrics.
"""

from __future__ import annotations

import os
import platform as py_platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from musicrec.config import Config
from musicrec.errors import ConfigError, InputError

DEFAULT_SIZES = {
    "generate": "yambda-50m",
    "preprocess": "1M,10M",
    "evaluate": "10000",
    "train": "160k",
    "als": "",
    "retrieval": "1M",
}


def _count(text: str) -> int:
    """``47M`` / ``10k`` / ``1000000`` -> int."""
    scale = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
    text = text.strip().lower()
    try:
        return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(text)
    except (ValueError, IndexError):
        raise InputError(f"benchmark size {text!r} is not a count such as 1000000, 10M or 47M") from None


def _versions() -> dict[str, str]:
    import pyspark
    import torch

    return {
        "python": py_platform.python_version(),
        "pyspark": pyspark.__version__,
        "torch": torch.__version__,
    }


def _generate(size: str, workdir: Path) -> dict[str, Any]:
    from musicrec.bench.generate import bench_generate
    from musicrec.data.generator import PRESETS

    if size not in PRESETS:
        raise InputError(f"generate benchmark sizes are presets: {', '.join(PRESETS)}; got {size!r}")
    return bench_generate(size, workdir / "generated")


def _preprocess(size: str, workdir: Path, config: Config) -> dict[str, Any]:
    from musicrec.bench.preprocess import bench_preprocess

    return bench_preprocess(
        _count(size), workdir=workdir / "preprocess", numpy_hugepages=config.runtime.numpy_hugepages
    )


def _evaluate(size: str, workdir: Path) -> dict[str, Any]:
    from musicrec.bench.evaluate import bench_evaluate

    out: dict[str, Any] = {}
    for task in ("T1", "T2", "next_track"):
        for key, value in bench_evaluate(n_users=_count(size), task=task).items():
            out[f"{task}.{key}"] = value
    return out


def _train(size: str, workdir: Path, config: Config) -> dict[str, Any]:
    from musicrec.bench.train import bench_train

    # Size: the catalogue (items); the model and batch are the config's (the gSASRec preset by default).
    return bench_train(config, workdir, n_items=_count(size))


def _als(size: str, workdir: Path, config: Config) -> dict[str, Any]:
    from musicrec.bench.als import bench_als

    # Size: a preprocessed dataset under lake.root (e.g. synthetic-medium, yambda-50m).
    return bench_als(config, size)


def _retrieval(size: str, workdir: Path, config: Config) -> dict[str, Any]:
    from musicrec.bench.retrieval import bench_retrieval

    # Size: the catalogue (items); the approximate index is the config's retrieval.kind and parameters.
    return bench_retrieval(n_items=_count(size), settings=config.retrieval, seed=config.seed)


RUNNERS = {
    "generate": _generate,
    "preprocess": _preprocess,
    "evaluate": _evaluate,
    "train": _train,
    "als": _als,
    "retrieval": _retrieval,
}
# Benchmarks that also take the config (the model they train, the lake they read, the index they
# build, the runtime settings of the jobs they run).
CONFIGURED = {"preprocess", "train", "als", "retrieval"}


def check_bench(config: Config) -> None:
    if config.bench.name is None:
        raise ConfigError(f"bench needs a benchmark name: one of {', '.join(RUNNERS)} (bench.name)")


def run_bench(config: Config) -> dict[str, Any]:
    """Each size is one nested run of the active run (the verb's), in the experiment ``benchmarks``."""
    name = config.bench.name
    assert name is not None  # check_bench ran
    results: dict[str, Any] = {}
    for size in (config.bench.sizes or DEFAULT_SIZES[name] or config.dataset.name).split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"musicrec-bench-{name}-"))
        try:
            with mlflow.start_run(run_name=f"{name} {size}", nested=True):
                runner = RUNNERS[name]
                figures = runner(size, workdir, config) if name in CONFIGURED else runner(size, workdir)
                mlflow.log_params({"benchmark": name, "size": size, "cores": os.cpu_count(), **_versions()})
                mlflow.log_metrics({k: float(v) for k, v in figures.items() if isinstance(v, int | float)})
                mlflow.log_dict(figures, "figures.json")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\n{name} @ {size}")
        for key, value in figures.items():
            print(f"  {key:<32} {value}")
        results[size] = figures
    return {"benchmark": name, "sizes": list(results)}
