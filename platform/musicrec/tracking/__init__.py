"""MLflow tracking: run lineage and logging conventions (docs/platform.md, "MLflow")."""
