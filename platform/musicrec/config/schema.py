"""The typed config every verb shares (docs/platform.md, "Config").

Unknown keys, wrong types and out-of-range values are errors: every model forbids extra keys
and types are strict (a YAML string "3" is not an int), so a typo never silently becomes a default.
"""

from __future__ import annotations

import re
import warnings
from typing import Literal

from pydantic import Field, field_validator, model_validator

from musicrec.config.grid import GridConfig
from musicrec.config.models import FAMILY_NAMES, ClassicFamily, GSASRecConfig, ModelConfig
from musicrec.config.section import Section
from musicrec.contract import (
    FEEDBACKS,
    HOLDOUT_TASKS,
    PROTOCOL_KINDS,
    Feedback,
    Protocol,
    ProtocolKind,
    Window,
    parse_name,
    task,
)

# `train.register` and the `register` section are named after the verb; pydantic warns that the name
# shadows BaseModel's inherited ABC ``register`` classmethod, which no config uses.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

# Checked here, not by the JVM: a bad value must fail before any work, as one line, not as a Java trace.
_SPARK_MASTER = re.compile(r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|spark://[^\s/]+|yarn|k8s://\S+")
_JVM_MEMORY = re.compile(r"[1-9]\d*([kmgt]b?)?", re.IGNORECASE)


class SparkConfig(Section):
    master: str = "local[*]"
    driver_memory: str = "6g"
    # null: adaptive execution sizes every shuffle from the data (spark.sql.adaptive.*); a number fixes the
    # user shuffle's width and Spark's default one (a small machine, where fewer JVM tasks win).
    shuffle_partitions: int | None = Field(8, ge=1)
    # Extra Spark settings, passed through as given (e.g. spark.executor.memory on a cluster).
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _master(cls, master: str) -> str:
        if not _SPARK_MASTER.fullmatch(master):
            raise ValueError("must be local, local[N], local[*], local[N,F], spark://HOST:PORT, yarn or k8s://URL")
        return master

    @field_validator("driver_memory")
    @classmethod
    def _memory(cls, memory: str) -> str:
        if not _JVM_MEMORY.fullmatch(memory):
            raise ValueError("must be a JVM memory size such as 512m or 6g")
        return memory


class RayConfig(Section):
    address: str = ""  # empty: RAY_ADDRESS if set, else an in-process Ray
    num_cpus: int | None = Field(None, ge=1)


class RuntimeConfig(Section):
    profile: Literal["local", "cluster"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    progress: bool = True
    # numpy's transparent-huge-page advice on large arrays: off, because first touches of such
    # memory stall on compaction under the usual THP settings (musicrec.runtime.hugepages).
    numpy_hugepages: bool = False
    spark: SparkConfig = SparkConfig()
    ray: RayConfig = RayConfig()


class DataConfig(Section):
    root: str = "data/synthetic"
    size: str = "small"
    layout: Literal["flat", "sequential"] = "flat"
    # flat layout: read the separate per-type files, or multi_event.parquet
    source: Literal["separate", "multi_event"] = "separate"


class DatasetConfig(Section):
    name: str = Field("synthetic-small", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class LakeConfig(Section):
    root: str = "lake"
    writer: Literal["auto", "spark_delta", "delta_rs"] = "auto"


class VacuumConfig(Section):
    # Files that versions younger than this no longer need stay (time travel within it works);
    # Delta's own default is 7 days.
    retention_hours: float = Field(168.0, ge=0.0)
    dry_run: bool = False


class MlflowConfig(Section):
    tracking_uri: str = ""  # empty: MLFLOW_TRACKING_URI if set, else the profile's default
    experiment: str = "default"
    local_dir: str = "mlflow"  # local profile: SQLite store and artifacts under this folder


class GenerateConfig(Section):
    preset: Literal["tiny", "small", "medium", "yambda-50m"] = "small"
    write_sequential: bool = False


class IngestConfig(Section):
    timestamp_min: int = Field(0, ge=0)
    timestamp_max: int = Field(27_000_000, ge=1)
    max_quarantine_share: float = Field(0.01, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _range(self) -> IngestConfig:
        if self.timestamp_max <= self.timestamp_min:
            raise ValueError("timestamp_max must be greater than timestamp_min")
        return self


class PopularityConfig(Section):
    recent_window: int = Field(175, ge=1)
    min_users: int = Field(50, ge=1)


class PreprocessConfig(Section):
    min_played_ratio_pct: int = Field(20, ge=0)
    popularity: PopularityConfig = PopularityConfig()
    min_len: int = Field(3, ge=1)
    max_len: int = Field(10_000, ge=1)
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5], min_length=1)

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError("ks must be distinct integers >= 1")
        return sorted(ks)

    @model_validator(mode="after")
    def _lens(self) -> PreprocessConfig:
        if self.max_len < self.min_len:
            raise ValueError("max_len must be >= min_len")
        return self


class HoldoutConfig(Section):
    gt_size: int = Field(10, ge=1)
    split_ratios: list[float] = Field(default_factory=lambda: [0.9, 0.05, 0.05])

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, r: list[float]) -> list[float]:
        if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-9:
            raise ValueError("split_ratios must be three non-negative numbers (train, val, test) summing to 1")
        return r


class GtsConfig(Section):
    last_timestamp: int | None = Field(None, ge=1)  # None: the largest timestamp in the data plus one
    test_size: int = Field(86_400, ge=1)
    val_size: int = Field(86_400, ge=0)
    gap: int = Field(1_800, ge=0)
    feedbacks: list[Feedback] = Field(default_factory=lambda: list(FEEDBACKS))
    listen_plus_min_ratio_pct: int = Field(50, ge=0)
    net_unlikes: bool = False


class SessionsConfig(Section):
    session_gap: int = Field(1_800, ge=1)
    skip_below: int = Field(20, ge=0)
    positive_from: int = Field(50, ge=0)


class EvaluateConfig(Section):
    protocols: list[ProtocolKind] = Field(default_factory=lambda: list(PROTOCOL_KINDS), min_length=1)
    split: Window = "test"  # holdout split and GTS window evaluated
    # Families fitted with their default config on every training sequence (general vs on task)...
    scorers: list[ClassicFamily] = Field(default_factory=lambda: ["mostpop", "transition"])
    # ... or one trained model instead: an MLflow run id, a runs:/ or models:/ URI, or a saved-model folder.
    model_uri: str = ""
    ks: list[int] = Field(default_factory=lambda: [10, 100], min_length=1)
    batch_size: int = Field(1024, ge=1)
    shuffle: bool = False
    sampled: bool = False
    sampled_n: int = Field(1000, ge=1)


class ScoreConfig(Section):
    """The ``score`` verb: external predictions scored on the lake's examples."""

    predictions: str = ""  # parquet with uid, task, items (best first); required by the verb
    examples: ProtocolKind | None = None  # required by the verb
    split: Window = "test"  # holdout split or GTS window
    feedback: Feedback = "listen_plus"  # GTS only
    ks: list[int] = Field(default_factory=lambda: [10, 100], min_length=1)
    out: str = ""  # write the metrics as JSON here; empty: print only

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("cut-offs must be integers >= 1")
        return ks


class BenchConfig(Section):
    """The ``bench`` verb: which benchmark, at which sizes (empty: the benchmark's defaults)."""

    name: Literal["generate", "preprocess", "evaluate", "train", "als", "retrieval"] | None = None  # required by the verb
    sizes: str = ""


class TrainConfig(Section):
    """What ``musicrec train`` fits the configured ``model`` on, and how (Ray Train for the sequential families)."""

    protocol: str = "holdout"  # holdout or gts_<window>_<feedback>: the `sequences` protocol trained on
    sequence: str = "lh_track"
    k: int = Field(1, ge=1)
    # Version of `sequences` to read; None: the latest when the run starts (logged either way).
    sequences_version: int | None = Field(None, ge=0)
    # CPUs the Ray task of a classic family reserves; None: model.num_threads where the family has
    # threads (0: every core of the largest node), else 1.
    num_cpus: int | None = Field(None, ge=1)
    output_dir: str = ""  # also keep the saved model folder here (it is always an MLflow artifact)
    # Task whose holdout validation users drive early stopping; None: the sequence's own task
    # (lh/disc: T1 or T3, fam: T2 or T4).
    task: Literal["T1", "T2", "T3", "T4"] | None = None
    # Ray Train scaling of the sequential families.
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    use_gpu: bool = False
    mixed_precision: bool = True  # bf16 autocast, on GPU only
    # users: each worker keeps the users whose uid hash falls in its shard (memory ~ data / workers);
    # replicated: every worker holds every user and the sampler splits each global batch by rank.
    sharding: Literal["users", "replicated"] = "users"
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: at the end of each epoch only
    max_failures: int = Field(0, ge=-1)  # FailureConfig(max_failures); -1: retry forever
    storage_path: str = "ray_results"  # Ray Train checkpoints; shared storage (s3://, NFS) on a cluster
    val_batch_size: int = Field(256, ge=1)
    # Fine-tuning: start from a trained model (an MLflow run id or a saved model folder).
    init_from: str = ""
    # Test hook: worker rank 0 raises once at this global step (the fault-tolerance test).
    fail_at_step: int | None = Field(None, ge=1)
    # Register the trained model at the end (as `musicrec register` would, with the `register.*` settings).
    register: bool = False

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        return Protocol.parse(value).name

    @field_validator("sequence")
    @classmethod
    def _sequence(cls, value: str) -> str:
        parse_name(value)
        return value


def _task(name: str) -> str:
    task(name)
    return name


class RegisterConfig(Section):
    """``musicrec register``: a training run's model as ``<dataset>.<task>.<family>``, one version per run."""

    run_id: str = ""  # the training run (required by the verb; train.register fills it itself)
    # Tasks to register the model for; empty: every task the run logged validation metrics of.
    tasks: list[str] = Field(default_factory=list)
    k: int = Field(100, ge=1)  # top-K the served model returns unless a call passes its own

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        return [_task(name) for name in tasks]


class PromoteConfig(Section):
    """``musicrec promote``: the ``champion`` alias of ``<dataset.name>.<task>.<family>`` to its best version."""

    task: str = ""  # required by the verb
    family: str = ""  # required by the verb
    metric: str = "ndcg_at_100"  # validation metric compared (higher is better), as tagged: val/<metric>
    version: int | None = Field(None, ge=1)  # promote this version instead of the best one
    # Promote even when the version was evaluated on other Delta versions than the current champion.
    force: bool = False

    @field_validator("task")
    @classmethod
    def _task(cls, name: str) -> str:
        return _task(name) if name else name

    @field_validator("family")
    @classmethod
    def _family(cls, family: str) -> str:
        if family and family not in FAMILY_NAMES:
            raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILY_NAMES)}")
        return family


class Dimension(Section):
    """One hyper-parameter of a sweep: ``uniform``/``loguniform`` floats and ``int`` (both bounds
    inclusive) between ``low`` and ``high``, or one of ``values``."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[bool | int | float | str | None] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Dimension:
        if self.type == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError("a choice takes a non-empty `values` list and no low/high")
            return self
        if self.values is not None or self.low is None or self.high is None:
            raise ValueError(f"a {self.type} dimension takes `low` and `high` and no values")
        if self.low > self.high or (self.type != "int" and self.low == self.high):
            raise ValueError("low must be below high")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform dimension needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int dimension needs whole-number bounds")
        return self


class TuneConfig(Section):
    """``musicrec tune``: an Optuna search with ASHA early stopping on validation NDCG@100 of
    ``train.task`` (conf/tune/*.yaml are presets)."""

    # Config keys swept ("model.factors", "train.k", ...) -> their dimension.
    space: dict[str, Dimension] = Field(default_factory=dict)
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    # ASHA over epochs (a classic family reports once, so only the search applies to it).
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)
    # CPUs one trial reserves: a classic family's fit; for a sequential family the trial only
    # drives its Ray Train job (whose workers reserve train.cpus_per_worker each): 0.1 is plenty.
    cpus_per_trial: float = Field(1.0, gt=0.0)
    # Register the best trial's model and make it champion if it beats the current one.
    register: bool = True

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for key in space:
            if not (key.startswith(("model.", "train.")) or key == "seed") or key == "model.family":
                raise ValueError(f"{key}: only model.*, train.* and seed can be swept (model.family is fixed)")
        return space


class RetrievalConfig(Section):
    """The faiss index of a model's item embeddings: built with its training run, searched by ``recommend``."""

    # Catalogues of at least this many items get an approximate index; smaller ones an exact one.
    approximate_from: int = Field(1_000_000, ge=1)
    kind: Literal["ivf", "hnsw"] = "ivf"
    nlist: int = Field(0, ge=0)  # IVF lists; 0: 4 * sqrt(n_items)
    # IVF lists searched per query: recall@100 0.96 with 4 * sqrt(n) lists on 1M items (musicrec bench retrieval).
    nprobe: int = Field(256, ge=1)
    hnsw_m: int = Field(32, ge=2)
    ef_construction: int = Field(128, ge=1)
    ef_search: int = Field(256, ge=1)  # raised to the number of candidates fetched when that is larger
    # Candidates fetched beyond K (and the history a discovery task drops), so that the float rounding
    # between faiss's scores and the model's cannot move an item across the top-K boundary.
    margin: int = Field(16, ge=0)


class RecommendConfig(Section):
    """``musicrec recommend``: a model's top-K per user and task into the ``recommendations`` table."""

    # An MLflow run id, a runs:/ URI, models:/<name>@<alias> or models:/<name>/<version> (required by the verb).
    model: str = ""
    tasks: list[str] = Field(default_factory=list)  # empty: every holdout task (T1-T4) the model serves
    k: int = Field(100, ge=1)
    split: Window = "test"  # the users recommended for: holdout users of this split, with their history
    batch_size: int = Field(1024, ge=1)  # users scored at once (bounds memory with K and the history)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        wrong = [name for name in tasks if name not in HOLDOUT_TASKS]
        if wrong:
            raise ValueError(f"unknown task {wrong[0]!r}; expected some of {', '.join(HOLDOUT_TASKS)}")
        return tasks


class ReportConfig(Section):
    """``musicrec report``: the results table of a grid run, read back from MLflow."""

    run_id: str = ""  # the `grid` run reported; empty: the latest finished one of the experiment
    output_dir: str = "reports"  # written under <output_dir>/<dataset>-<experiment>-<run id>/


class Config(Section):
    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    dataset: DatasetConfig = DatasetConfig()
    lake: LakeConfig = LakeConfig()
    vacuum: VacuumConfig = VacuumConfig()
    mlflow: MlflowConfig = MlflowConfig()
    seed: int = Field(42, ge=0)
    generate: GenerateConfig = GenerateConfig()
    ingest: IngestConfig = IngestConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    holdout: HoldoutConfig = HoldoutConfig()
    gts: GtsConfig = GtsConfig()
    sessions: SessionsConfig = SessionsConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    score: ScoreConfig = ScoreConfig()
    bench: BenchConfig = BenchConfig()
    train: TrainConfig = TrainConfig()
    register: RegisterConfig = RegisterConfig()
    promote: PromoteConfig = PromoteConfig()
    tune: TuneConfig = TuneConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    recommend: RecommendConfig = RecommendConfig()
    grid: GridConfig = GridConfig()
    report: ReportConfig = ReportConfig()
    model: ModelConfig = GSASRecConfig()

    @model_validator(mode="after")
    def _grid_fits(self) -> Config:
        # The grid trains on sequences preprocess writes and reports @100 (paper 000's tables).
        missing = sorted({c.k for c in self.grid.cells if c.k not in self.preprocess.ks})
        if missing:
            raise ValueError(f"grid.cells: k={missing} not among preprocess.ks={self.preprocess.ks}")
        if self.grid.cells and 100 not in self.evaluate.ks:
            raise ValueError("grid.cells: the report compares @100, so evaluate.ks must include 100")
        baselines = self.grid.baselines
        if baselines.models:
            absent = [f for f in baselines.feedbacks if f not in self.gts.feedbacks]
            if absent:
                raise ValueError(f"grid.baselines.feedbacks: {absent} not among gts.feedbacks={self.gts.feedbacks}")
            if not {10, 100} <= set(self.evaluate.ks):
                raise ValueError("grid.baselines: the table reports @10 and @100, so evaluate.ks must include both")
        return self
