"""Measurements and deployment of models and tickets that tools and benchmarks share."""
from .latency import deployed, interleaved_latency, latency_ratio
from .onnx_export import OnnxRuntimeModel, TensorOutputs, export_onnx, max_abs_difference
from .pruned_evaluation import (evaluate, load_exact_weights, offline_runner,
                                read_training_checkpoint, recalibrate_bn, score_pruning,
                                validation_scorer)
from .ticket_models import conv_widths, load_models, ticket_costs

__all__ = ['interleaved_latency', 'deployed', 'latency_ratio', 'load_models', 'conv_widths',
           'ticket_costs', 'export_onnx', 'OnnxRuntimeModel',
           'TensorOutputs', 'max_abs_difference', 'evaluate', 'recalibrate_bn', 'score_pruning',
           'load_exact_weights', 'read_training_checkpoint', 'offline_runner',
           'validation_scorer']
