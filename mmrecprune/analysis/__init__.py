"""Measurements and deployment of models and tickets that tools and benchmarks share."""
from .latency import deployed, interleaved_latency
from .onnx_export import OnnxRuntimeModel, TensorOutputs, export_onnx, max_abs_difference

__all__ = ['interleaved_latency', 'deployed', 'export_onnx', 'OnnxRuntimeModel',
           'TensorOutputs', 'max_abs_difference']
