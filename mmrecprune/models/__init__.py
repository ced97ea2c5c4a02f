import mmdet.models  # noqa: F401  registers mmdet's backbones ('mmdet.ResNet')

from .classifier import ImageClassifier
from .decoder import InverseResNetDecoder
from .hyperspherical_conv import HypersphericalConv2d
from .pruned_backbone import build_backbone_from_ticket
from .reconstruction_classifier import ReconstructionClassifier
from .rotnet import RotNetClassifier
from .strict_pretrained import StrictPretrained

__all__ = ["ImageClassifier", "InverseResNetDecoder", "HypersphericalConv2d", "ReconstructionClassifier", "RotNetClassifier",
           "StrictPretrained", "build_backbone_from_ticket"]
