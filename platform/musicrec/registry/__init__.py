"""The per-task model registry: ``<dataset>.<task>.<family>`` names, one version per training run,
the ``champion`` alias, and the registered model served as an MLflow pyfunc (README, "Model registry")."""
