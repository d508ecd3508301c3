"""``musicrec tune``: Ray Tune sweeps (Optuna search, ASHA early stopping) of any trainable family."""
