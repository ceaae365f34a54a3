"""Streaming scoring: manifest + ONNX session, model registry with hot reload, windows, micro-batching, online
cluster centres in Redis, alert policy, cross-venue checks, the worker loop and the offline `rmad score`."""
