"""The verb registry and its one parser, the user-error classes (exit code, one line, no traceback,
no run, no output), and the run shape every verb shares: one MLflow run with the resolved config,
git commit and Delta lineage, and commits that lead back to their run. Real Spark, Delta and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.entities import ViewType

from conftest import TEST_OVERRIDES
from musicrec import verbs
from musicrec.cli import _parse, verb_parser
from musicrec.config import load_config
from musicrec.data.generator import generate, preset
from musicrec.errors import ConfigError, InputError
from musicrec.lake.delta import table_version
from musicrec.lake.provenance import written_by
from musicrec.lake.tables import table_path
from musicrec.runner import run_verb
from musicrec.runtime.mlflow_setup import setup_mlflow, ui_hint

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
LOCAL = str(ROOT / "conf" / "local.yaml")
TINY = str(ROOT / "conf" / "datasets" / "synthetic-tiny.yaml")


def command(entry: str, verb: str) -> list[str]:
    if entry == "job":
        return [sys.executable, str(ROOT / "jobs" / f"{verb}.py")]
    return [sys.executable, "-m", "musicrec.cli", verb]


# The command in its own process, exit code and stderr as a user sees them: a few seconds each
# (interpreter, MLflow import), so these tests are out of the in-process unit tier.
in_own_process = pytest.mark.integration


def call(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_every_job_is_a_verb_of_the_registry():
    assert JOBS and set(JOBS) <= set(verbs.VERBS)


@in_own_process
@pytest.mark.parametrize("verb", JOBS)
def test_job_and_verb_accept_the_same_arguments(verb, tmp_path):
    """Both entry points parse `--config A k=v --config B k=v` alike: each override reaches the config."""
    args = ["--config", LOCAL, "preprocess.bogus_first=1", "--config", TINY, "holdout.bogus_second=2"]
    job, cli = call([*command("job", verb), *args], tmp_path), call([*command("cli", verb), *args], tmp_path)
    assert (job.returncode, job.stdout, job.stderr) == (cli.returncode, cli.stdout, cli.stderr)
    assert cli.returncode == 2
    assert "preprocess.bogus_first: unknown key [from override 'preprocess.bogus_first=1']" in cli.stderr
    assert "holdout.bogus_second: unknown key [from override 'holdout.bogus_second=2']" in cli.stderr
    job_help, cli_help = call([*command("job", verb), "--help"], tmp_path), call([*command("cli", verb), "--help"], tmp_path)
    assert job_help.returncode == cli_help.returncode == 0
    assert job_help.stdout == cli_help.stdout and "--config FILE" in cli_help.stdout


@in_own_process
def test_overrides_after_each_config_file_are_applied(tmp_path):
    """The last override names the lake; it follows the second file, which set another lake root."""
    other = tmp_path / "other.yaml"
    other.write_text("lake: {root: from-file}\n")
    lake = tmp_path / "lake"
    args = ["--config", LOCAL, "dataset.name=mine", "--config", str(other), f"lake.root={lake}"]
    for entry in ("job", "cli"):
        proc = call([*command(entry, "evaluate"), *args], tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert f"in the lake at {lake}/mine;" in proc.stderr


def test_verb_flags_are_config_keys():
    verb = verbs.VERBS["score"]
    config = _parse(
        verb_parser(verb),
        verb,
        ["--predictions", "p.parquet", "--config", LOCAL, "score.split=val", "--examples", "gts", "--k", "5,20",
         "--lake", "/l", "--dataset", "d", "score.ks=[1]", "--feedback", "like"],
    )
    # Flags win over overrides (score.ks=[1] loses to --k).
    assert (config.score.predictions, config.score.examples, config.score.ks) == ("p.parquet", "gts", [5, 20])
    assert (config.score.split, config.score.feedback, config.lake.root, config.dataset.name) == ("val", "like", "/l", "d")
    generate_verb = verbs.VERBS["generate"]
    config = _parse(verb_parser(generate_verb), generate_verb, ["--config", LOCAL, "--config", TINY, "--preset", "small"])
    assert (config.generate.preset, config.data.size) == ("small", "small")  # --preset names the folder too
    with pytest.raises(InputError, match="--k must be comma-separated positive integers"):
        _parse(verb_parser(verb), verb, ["--k", "ten"])
    with pytest.raises(ConfigError, match="--seed: not a valid value: 'x'"):
        _parse(verb_parser(generate_verb), generate_verb, ["--seed", "x"])


def test_the_mlflow_hint_is_runnable_as_printed(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert ui_hint(load_config()) == "make mlflow-ui"  # the Makefile target reads ./mlflow/mlflow.db
    hint = ui_hint(load_config(overrides=[f"mlflow.local_dir={tmp_path}"]))
    assert Path(hint.split()[0]).is_file() and hint.endswith(f"--backend-store-uri sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # `make` would not find the Makefile here
    assert ui_hint(load_config()).startswith(str(Path(sys.executable).parent / "mlflow"))


def test_a_new_verb_is_one_registry_entry_and_one_function(monkeypatch, tmp_path, config_for):
    """A registered function runs as one MLflow run; a user error it raises mid-run removes that run."""
    monkeypatch.setitem(verbs.REGISTRY, "hello", verbs.Verb("hello", "say hello", f"{__name__}:_hello"))
    config = config_for("mlflow.experiment=new")
    summary = run_verb("hello", config)
    assert summary["greeting"] == "hello synthetic-small"
    run = mlflow.get_run(summary["mlflow_run"])
    assert run.info.status == "FINISHED" and run.info.run_name == "hello"
    assert run.data.tags["verb"] == "hello" and len(run.data.tags["git_commit"]) >= 40
    assert run.data.params["mlflow.experiment"] == "new"
    config_file = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml")
    assert yaml.safe_load(Path(config_file).read_text())["mlflow"]["experiment"] == "new"

    with pytest.raises(InputError, match="no greeting"):
        run_verb("hello", config_for("mlflow.experiment=new", "seed=0"))
    assert mlflow.active_run() is None
    experiment = mlflow.get_experiment_by_name("synthetic-small/new")
    runs = mlflow.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, output_format="list")
    assert [(r.info.status, r.info.lifecycle_stage) for r in runs if r.info.run_id != run.info.run_id] == [
        ("KILLED", "deleted")
    ]


def _hello(config) -> dict[str, str]:
    if config.seed == 0:
        raise InputError("no greeting for seed 0")
    return {"greeting": f"hello {config.dataset.name}"}


# --- user errors: exit code, one clear stderr line, no traceback, no MLflow run, no output ---------


def assert_user_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def workdir(tmp_path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def roots(work: Path) -> list[str]:
    return [f"lake.root={work / 'lake'}", f"data.root={work / 'data'}", f"mlflow.local_dir={work / 'mlflow'}"]


def nothing_written(work: Path) -> None:
    assert sorted(p.name for p in work.iterdir()) == [], "a failed command wrote output"


@in_own_process
@pytest.mark.parametrize(
    ("verb", "override", "needle"),
    [
        ("ingest", "runtime.spark.driver_memory=banana", "runtime.spark.driver_memory: must be a JVM memory size"),
        ("preprocess", "runtime.spark.master=locale[2]", "runtime.spark.master: must be local, local[N]"),
    ],
)
def test_bad_spark_settings_fail_before_spark_starts(verb, override, needle, workdir):
    proc = call([*command("cli", verb), "--config", LOCAL, "--config", TINY, *roots(workdir), override], workdir)
    assert_user_error(proc, 2, needle, f"[from override '{override}']")
    nothing_written(workdir)


@in_own_process
def test_a_cross_field_error_names_the_overrides_not_the_file(workdir):
    proc = call([*command("cli", "preprocess"), "--config", TINY, *roots(workdir),
                 "preprocess.min_len=5", "preprocess.max_len=2"], workdir)
    line = assert_user_error(proc, 2, "max_len must be >= min_len", "override 'preprocess.min_len=5'",
                             "override 'preprocess.max_len=2'")
    assert "synthetic-tiny.yaml" not in line
    nothing_written(workdir)


@in_own_process
@pytest.mark.parametrize(
    ("verb", "needle"),
    [
        ("evaluate", "no sequences, holdout_examples, gts_examples tables in the lake at"),
        ("preprocess", "no events table in the lake at"),
    ],
)
def test_an_empty_lake_is_a_clear_error_and_opens_no_run(verb, needle, workdir):
    proc = call([*command("cli", verb), "--config", LOCAL, "--config", TINY, *roots(workdir)], workdir)
    writer = "preprocess" if verb == "evaluate" else "ingest"
    assert_user_error(proc, 1, needle, f"run `musicrec {writer}` for dataset synthetic-tiny first")
    nothing_written(workdir)  # no lake, and no MLflow store: the run was never opened


@in_own_process
def test_cluster_profile_without_a_tracking_server_is_a_config_error(workdir):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = call([*command("cli", "generate"), "--config", str(ROOT / "conf" / "cluster.yaml"), *roots(workdir)],
                workdir, env)
    assert_user_error(proc, 2, "runtime.profile=cluster needs an MLflow server", "MLFLOW_TRACKING_URI")
    nothing_written(workdir)


@in_own_process
def test_a_missing_predictions_file_is_named(workdir):
    proc = call([*command("cli", "score"), "--config", LOCAL, *roots(workdir), "--predictions",
                 str(workdir / "nope.parquet"), "--examples", "holdout"], workdir)
    assert_user_error(proc, 1, f"predictions file {workdir / 'nope.parquet'} not found")
    nothing_written(workdir)


@in_own_process
def test_missing_input_files_stop_ingest_before_its_run(workdir):
    proc = call([*command("cli", "ingest"), "--config", LOCAL, "--config", TINY, *roots(workdir),
                 "runtime.spark.master=local[1]", "runtime.spark.driver_memory=1g"], workdir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("musicrec ingest: error: ")
    assert "missing required file" in proc.stderr and "flat/tiny/listens.parquet" in proc.stderr
    nothing_written(workdir)


# --- lineage: from a table version to the run and config that wrote it ------------------------------


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory, spark):
    """ingest then preprocess of the tiny preset through the runner, with a non-default recent_window."""
    work = tmp_path_factory.mktemp("lineage")
    generate(preset("tiny"), work / "data", progress=False)
    config = load_config(
        [TINY],
        [*TEST_OVERRIDES, *roots(work), "preprocess.popularity.recent_window=50", "mlflow.experiment=lineage"],
    )
    ingest = run_verb("ingest", config, spark)
    prep = run_verb("preprocess", config, spark)
    return config, ingest, prep


def test_a_sequences_version_leads_to_the_preprocess_run_and_its_config(built_lake):
    config, ingest, prep = built_lake
    path = table_path(config.lake.root, config.dataset.name, "sequences")
    version = table_version(path)
    meta = written_by(path, version)
    assert meta["mlflow_run_id"] == prep["mlflow_run"] and meta["verb"] == "preprocess"
    setup_mlflow(config)
    run = mlflow.get_run(meta["mlflow_run_id"])
    assert run.info.run_name == "preprocess" and run.info.status == "FINISHED"
    assert run.data.params["preprocess.popularity.recent_window"] == "50"
    assert run.data.tags["config_hash"] == meta["config_hash"]
    saved = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml")
    assert yaml.safe_load(Path(saved).read_text())["preprocess"]["popularity"]["recent_window"] == 50
    # The events version it read and the tables it wrote are the run's MLflow datasets.
    datasets = {
        (d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"]): json.loads(d.dataset.source)
        for d in run.inputs.dataset_inputs
    }
    events_version = table_version(table_path(config.lake.root, config.dataset.name, "events"))
    assert datasets[("synthetic-tiny.events", "input")]["delta_table_version"] == events_version
    assert datasets[("synthetic-tiny.sequences", "output")]["delta_table_version"] == version
    assert datasets[("synthetic-tiny.sequences", "output")]["path"] == str(Path(path).resolve())
    # and the events version leads to the ingest run.
    events_meta = written_by(table_path(config.lake.root, config.dataset.name, "events"), events_version)
    assert events_meta["mlflow_run_id"] == ingest["mlflow_run"]
    assert mlflow.get_run(ingest["mlflow_run"]).info.run_name == "ingest"


def test_score_is_a_verb_run_with_its_flags_as_config(built_lake, tmp_path):
    """Perfect predictions (the targets themselves) hit for every user, logged to the score verb's run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from musicrec.lake.delta import read_arrow

    config, _, _ = built_lake
    examples = read_arrow(table_path(config.lake.root, config.dataset.name, "holdout_examples"),
                          filters=[("split", "=", "test")])
    assert examples.num_rows > 0
    # A target may repeat (a track heard twice); a prediction lists each item once.
    items = [list(dict.fromkeys(targets)) for targets in examples["targets"].to_pylist()]
    pq.write_table(pa.table({"uid": examples["uid"], "task": examples["task"],
                             "items": pa.array(items, examples["targets"].type)}), tmp_path / "perfect.parquet")
    scored = config.model_copy(update={"score": config.score.model_copy(
        update={"predictions": str(tmp_path / "perfect.parquet"), "examples": "holdout", "ks": [10]})})
    summary = run_verb("score", scored)
    tasks = sorted(set(examples["task"].to_pylist()))
    assert summary["tasks"] == tasks
    run = mlflow.get_run(summary["mlflow_run"])
    assert run.info.run_name == "score" and run.data.params["score.examples"] == "holdout"
    for task in tasks:
        assert run.data.metrics[f"test/{task}/hr_at_10"] == 1.0  # every user's targets are predicted
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"synthetic-tiny.holdout_examples"}
