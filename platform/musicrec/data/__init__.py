"""Input data: the synthetic Yambda generator and readers of the Yambda layout."""
