"""Inference: model bundles, fusion, TTA, thresholds, outputs and ONNX export."""
