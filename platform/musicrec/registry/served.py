"""The code MLflow logs as the registered model (models from code): loading the model runs this file."""

from mlflow.models import set_model

from musicrec.registry.pyfunc import TopK

set_model(TopK())
