import mmdet.models  # noqa: F401  registers mmdet's backbones ('mmdet.ResNet')

from .classifier import ImageClassifier

__all__ = ['ImageClassifier']
