"""The typed config every verb shares (spec platform.md, "Config keys that every job shares").

Unknown keys, wrong types and out-of-range values are errors: every model forbids extra keys
and types are strict (a YAML string "3" is not an int), so a typo never silently becomes a default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from musicrec.config.models import ClassicFamily, GSASRecConfig, ModelConfig
from musicrec.config.section import Section
from musicrec.contract import FEEDBACKS, PROTOCOL_KINDS, Feedback, Protocol, ProtocolKind, Window, parse_name


class SparkConfig(Section):
    master: str = "local[*]"
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(8, ge=1)
    # Extra Spark settings, passed through as given (e.g. spark.executor.memory on a cluster).
    conf: dict[str, str] = Field(default_factory=dict)


class RayConfig(Section):
    address: str = ""  # empty: RAY_ADDRESS if set, else an in-process Ray
    num_cpus: int | None = Field(None, ge=1)


class RuntimeConfig(Section):
    profile: Literal["local", "cluster"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    progress: bool = True
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


class TrainConfig(Section):
    """What ``musicrec train`` fits the configured ``model`` on."""

    protocol: str = "holdout"  # holdout or gts_<window>_<feedback>: the `sequences` protocol trained on
    sequence: str = "lh_track"
    k: int = Field(1, ge=1)
    # Version of `sequences` to read; None: the latest when the run starts (logged either way).
    sequences_version: int | None = Field(None, ge=0)
    num_cpus: int = Field(1, ge=1)  # CPUs the Ray task reserves (implicit's threads are model.num_threads)
    output_dir: str = ""  # also keep the saved model folder here (it is always an MLflow artifact)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        return Protocol.parse(value).name

    @field_validator("sequence")
    @classmethod
    def _sequence(cls, value: str) -> str:
        parse_name(value)
        return value


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
    train: TrainConfig = TrainConfig()
    model: ModelConfig = GSASRecConfig()
