"""Deployment (ONNX export, fixed-rate runtime). Nothing here yet."""
