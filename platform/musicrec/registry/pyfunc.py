"""The registered model as an MLflow pyfunc: user histories in, the task's top-K items out.

``mlflow.pyfunc.load_model("models:/<dataset>.<task>.<family>@champion").predict(df)`` takes a
DataFrame with a ``history`` column (each row one user's raw item ids in the task's domain, oldest
first) and returns one row per user: ``items`` (the top-K raw item ids, best first) and ``scores``.
The ranking is the evaluator's (:func:`musicrec.evaluate.protocols.recommend`): the model's input
derived as for its training sequence and the task's candidate filter applied, so a served list
equals the evaluated one. ``params={"k": N}`` asks for another K.

The model is logged as code (MLflow's "models from code", :mod:`musicrec.registry.served`), with
two artifacts: the saved model folder (arrays and JSON, no pickles) and ``serving.json`` (the task
and the default K). Not MLflow's ``model_config``: MLflow also logs that as params of the active
run, where a second task's model would clash with the first's. Serving needs ``musicrec`` and its
array libraries on the path, never pyspark or Ray.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from musicrec.arrays import Ragged
from musicrec.evaluate.protocols import recommend
from musicrec.models import FittedModel, load_model

ARTIFACT = "model"  # the saved model folder inside the pyfunc model
SERVING = "serving"  # serving.json: {"task": ..., "k": ...}
# What the served model imports (the families' libraries included); pinned to the versions that logged it.
SERVING_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "torch",
    "pydantic",
    "deltalake",
    "implicit",
    "threadpoolctl",
)


class TopK(mlflow.pyfunc.PythonModel):
    """Top-K items of a task for a batch of user histories."""

    def load_context(self, context) -> None:
        self.fitted = load_model(context.artifacts[ARTIFACT])
        serving = json.loads(Path(context.artifacts[SERVING]).read_text())
        self.task, self.k = serving["task"], int(serving["k"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k") or self.k)
        return top_k(self.fitted, self.task, model_input, k)


def top_k(fitted: FittedModel, task: str, histories: pd.DataFrame, k: int) -> pd.DataFrame:
    """``items`` and ``scores`` (best first, at most ``k``) per row of ``histories["history"]``."""
    rows = [np.asarray([] if h is None else h, dtype=np.int64) for h in histories["history"]]
    items, scores = recommend(fitted, Ragged.from_lists(rows), task, k)
    # Fewer than k candidates (a familiar task's short history) leaves -1 padding: dropped.
    kept = items >= 0
    return pd.DataFrame(
        {
            "items": [row[keep].tolist() for row, keep in zip(items, kept, strict=True)],
            "scores": [row[keep].astype(np.float64).tolist() for row, keep in zip(scores, kept, strict=True)],
        }
    )


def input_example(fitted: FittedModel) -> pd.DataFrame:
    """Two histories of items the model knows: the logged input example."""
    ids = fitted.items.ids.tolist()
    return pd.DataFrame({"history": [ids[:3], ids[3:5] or ids[:1]]})


def requirements() -> list[str]:
    out = []
    for package in SERVING_PACKAGES:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out


def log_pyfunc(
    fitted: FittedModel, folder: Path, task: str, k: int, name: str = "served"
) -> mlflow.models.model.ModelInfo:
    """Log ``fitted`` (saved at ``folder``) as a pyfunc serving ``task``, with signature and input example."""
    from mlflow.models import infer_signature

    example = input_example(fitted)
    signature = infer_signature(example, top_k(fitted, task, example, k), params={"k": k})
    with tempfile.TemporaryDirectory(prefix="musicrec-serving-") as tmp:
        serving = Path(tmp) / "serving.json"
        serving.write_text(json.dumps({"task": task, "k": k}))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("served.py")),
            artifacts={ARTIFACT: str(folder), SERVING: str(serving)},
            signature=signature,
            input_example=example,
            pip_requirements=requirements(),
        )


def fitted_from_pyfunc(path: str | Path) -> FittedModel:
    """The saved model inside a downloaded pyfunc model folder, restricted to the task it serves."""
    from mlflow.models import Model

    artifacts = Model.load(str(path)).flavors["python_function"]["artifacts"]
    fitted = load_model(Path(path) / artifacts[ARTIFACT]["path"])
    fitted.tasks = (json.loads((Path(path) / artifacts[SERVING]["path"]).read_text())["task"],)
    return fitted
