"""The training side (PyTorch): the RMAD-Crypto model, baselines, data loaders, evaluation and ONNX export."""
