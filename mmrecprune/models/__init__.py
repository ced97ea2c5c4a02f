import mmdet.models  # noqa: F401  registers mmdet's backbones ('mmdet.ResNet')

from .classifier import ImageClassifier
from .decoder import InverseResNetDecoder
from .pruned_backbone import build_backbone_from_ticket
from .reconstruction_classifier import ReconstructionClassifier

__all__ = ["ImageClassifier", "InverseResNetDecoder", "ReconstructionClassifier",
           "build_backbone_from_ticket"]
