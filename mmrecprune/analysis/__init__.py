"""Measurements of models and tickets that tools and benchmarks share."""
from .latency import deployed, interleaved_latency

__all__ = ['deployed', 'interleaved_latency']
