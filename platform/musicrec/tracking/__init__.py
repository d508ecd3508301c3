"""MLflow tracking: run lineage and logging conventions (spec platform.md, "MLflow conventions")."""
