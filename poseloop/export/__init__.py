"""Model import and export: DeepLabCut 3 files, ONNX."""
