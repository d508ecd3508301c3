"""Spark, Ray and MLflow for the local and cluster profiles, built from the config."""
