"""Runtime profiles (real MLflow, Ray) and the CLI's contract: verbs, validation before work, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from musicrec.cli import PLANNED, VERBS, main
from musicrec.config import load_config
from musicrec.errors import InputError
from musicrec.runtime.mlflow_setup import setup_mlflow, tracking_uri
from musicrec.verbs import REGISTRY, Verb

ROOT = Path(__file__).resolve().parents[1]
SPEC_VERBS = {"generate", "ingest", "preprocess", "train", "tune", "evaluate", "recommend", "pipeline", "report"}


def test_help_lists_every_verb_of_the_spec(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in SPEC_VERBS | {"score", "bench", "config"}:
        assert verb in out
    assert SPEC_VERBS <= set(VERBS) and not PLANNED  # every verb of the spec is built


def test_unbuilt_verbs_say_so_and_fail(capsys, monkeypatch):
    # None is left unbuilt; a verb declared before its function exists still fails cleanly.
    monkeypatch.setitem(REGISTRY, "later", Verb("later", "a verb of later work"))
    assert main(["later"]) == 3
    assert "not built yet" in capsys.readouterr().err


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "--config", str(ROOT / "conf/experiments/demo.yaml"), "seed=5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "name: synthetic-small" in out and "min_users: 5" in out


@pytest.mark.integration  # the real command in its own process: exit code and stderr as a user sees them
def test_a_bad_config_fails_before_any_work(tmp_path):
    lake = tmp_path / "lake"
    proc = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "ingest", f"lake.root={lake}", "preprocess.min_userz=3"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "preprocess.min_userz: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not lake.exists()


def test_local_mlflow_is_sqlite_under_the_configured_folder(tmp_path, monkeypatch):
    # MLflow exports this on set_tracking_uri; the local profile must not follow another run's store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    config = load_config(overrides=[f"mlflow.local_dir={tmp_path / 'ml'}", "dataset.name=ds", "mlflow.experiment=exp"])
    assert tracking_uri(config) == f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    experiment_id = setup_mlflow(config)
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.5)
    got = mlflow.get_run(run.info.run_id)
    assert got.data.metrics == {"m": 1.5}
    assert got.info.experiment_id == experiment_id
    assert mlflow.get_experiment(experiment_id).name == "ds/exp"
    assert setup_mlflow(config) == experiment_id  # idempotent


def test_cluster_profile_requires_servers(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(overrides=["runtime.profile=cluster"])
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        tracking_uri(config)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(config) == "http://127.0.0.1:5999"


@pytest.mark.ray
def test_local_ray_starts_in_process():
    import ray

    from musicrec.runtime.ray_setup import init_ray

    init_ray(load_config(overrides=["runtime.ray.num_cpus=1"]))
    try:
        assert ray.is_initialized()
        assert ray.get(ray.remote(lambda x: x * 2).remote(21)) == 42
    finally:
        ray.shutdown()


def test_bench_runner_logs_to_the_benchmarks_experiment(tmp_path):
    from musicrec.bench.run import run_bench

    config = load_config(overrides=[f"mlflow.local_dir={tmp_path / 'ml'}", "bench.name=generate", "bench.sizes=tiny"])
    setup_mlflow(config, "benchmarks", per_dataset=False)  # what the runner does for the bench verb
    assert run_bench(config) == {"benchmark": "generate", "sizes": ["tiny"]}
    runs = mlflow.search_runs(experiment_names=["benchmarks"])
    assert len(runs) == 1
    assert runs["params.size"][0] == "tiny" and runs["params.benchmark"][0] == "generate"
    assert runs["metrics.events"][0] > 0 and runs["metrics.events_per_s"][0] > 0
    with pytest.raises(InputError, match="presets"):
        run_bench(config.model_copy(update={"bench": config.bench.model_copy(update={"sizes": "huge"})}))


def test_overrides_after_options_reach_every_verb(capsys):
    assert main(["config", "show", "--config", str(ROOT / "conf/local.yaml"), "seed=11"]) == 0
    assert "seed: 11" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["config", "show", "--config", str(ROOT / "conf/local.yaml"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_generate_verb_maps_its_flags_onto_the_generator(tmp_path):
    from musicrec.data.generator import generate, preset

    assert main(["generate", "--config", str(ROOT / "conf/local.yaml"), "--preset", "tiny", "--seed", "3",
                 "--out", str(tmp_path / "cli"), "data.size=tiny", "runtime.progress=false"]) == 0
    generate(preset("tiny", seed=3), tmp_path / "direct", size="tiny", progress=False)
    for name in ("listens", "likes", "multi_event"):
        cli = (tmp_path / "cli" / "flat" / "tiny" / f"{name}.parquet").read_bytes()
        assert cli == (tmp_path / "direct" / "flat" / "tiny" / f"{name}.parquet").read_bytes()


def test_numpy_hugepage_advice_follows_the_config(monkeypatch):
    import os

    from numpy._core.multiarray import _set_madvise_hugepage

    from musicrec.runtime.hugepages import apply_numpy_hugepages, numpy_hugepage_advice

    before = numpy_hugepage_advice()
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    try:
        assert load_config().runtime.numpy_hugepages is False
        apply_numpy_hugepages(load_config().runtime.numpy_hugepages)
        assert (os.environ.get("NUMPY_MADVISE_HUGEPAGE"), numpy_hugepage_advice()) == ("0", False)
        apply_numpy_hugepages(load_config(overrides=["runtime.numpy_hugepages=true"]).runtime.numpy_hugepages)
        assert (os.environ.get("NUMPY_MADVISE_HUGEPAGE"), numpy_hugepage_advice()) == ("1", True)
    finally:
        _set_madvise_hugepage(before)


def test_spark_python_workers_get_the_hugepage_setting(spark):
    # get_spark puts the setting (default: off) in spark.executorEnv, which is how a cluster's
    # executors get it; local workers would also inherit the driver's variable where a verb set it.
    import pyarrow as pa

    def probe(batches):
        import os

        from musicrec.runtime.hugepages import numpy_hugepage_advice

        env, advice = os.environ.get("NUMPY_MADVISE_HUGEPAGE"), numpy_hugepage_advice()
        for batch in batches:
            yield pa.RecordBatch.from_pydict({"env": [env] * batch.num_rows, "advice": [advice] * batch.num_rows})

    rows = spark.range(4).mapInArrow(probe, "env string, advice boolean").distinct().collect()
    assert [(r.env, r.advice) for r in rows] == [("0", False)]
