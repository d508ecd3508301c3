"""``musicrec train``: fit one model family on one training sequence of the lake, log it to MLflow."""
