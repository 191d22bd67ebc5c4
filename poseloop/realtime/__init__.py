"""The live engine: camera -> preprocess -> ONNX Runtime -> decoder -> pose (no torch)."""
