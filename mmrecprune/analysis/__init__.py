"""Measurements and deployment of models and tickets that tools and benchmarks share."""
from .latency import deployed, interleaved_latency
from .onnx_export import OnnxRuntimeModel, TensorOutputs, export_onnx, max_abs_difference
from .pruned_evaluation import evaluate, recalibrate_bn, score_pruning

__all__ = ['interleaved_latency', 'deployed', 'export_onnx', 'OnnxRuntimeModel',
           'TensorOutputs', 'max_abs_difference', 'evaluate', 'recalibrate_bn', 'score_pruning']
