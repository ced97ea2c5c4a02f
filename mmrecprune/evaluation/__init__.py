from .accuracy import Accuracy, RotationAccuracy

__all__ = ['Accuracy', 'RotationAccuracy']
