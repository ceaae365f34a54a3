"""Numenta Anomaly Benchmark (NAB v1.1): data loading, NAB's own scoring, and the online RMAD detector run on it."""
