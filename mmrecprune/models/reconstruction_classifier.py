"""Classifier with a reconstruction decoder: the model of RecPrune's two training stages."""
import torch.nn.functional as F

from mmrecprune.registry import MODELS
from .classifier import ImageClassifier

STAGES = ('decoder', 'prune')


@MODELS.register_module()
class ReconstructionClassifier(ImageClassifier):
    """``L = L_cls + lambda * mean ||D(F(x)) - x||^2`` with one part frozen per stage.

    - ``stage='decoder'``: the encoder (backbone) and the classifier head are frozen (no
      gradients, BN in eval mode); only the decoder learns, from ``L_rec`` alone.
    - ``stage='prune'``: the decoder is frozen; backbone and head learn from
      ``L_cls + lambda * L_rec``. With ``rec_weight=0`` this is plain classification (IMP).

    The reconstruction target is the normalised input (the output of the data preprocessor).
    The backbone must output every stage (``out_indices=(0, 1, 2, 3)``); classification uses
    the last one.

    Args:
        decoder (dict): decoder config, e.g. ``InverseResNetDecoder``.
        stage (str): ``'decoder'`` or ``'prune'``.
        rec_weight (float): lambda. Defaults to 10 (the paper's value).
        **kwargs: :class:`ImageClassifier` arguments.
    """

    def __init__(self, decoder, stage='prune', rec_weight=10.0, **kwargs):
        super().__init__(**kwargs)
        if stage not in STAGES:
            raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
        if rec_weight < 0:
            raise ValueError(f'rec_weight (lambda) must be >= 0, got {rec_weight}')
        self.decoder = MODELS.build(decoder)
        self.stage = stage
        self.rec_weight = rec_weight
        self._frozen = [self.backbone, self.head] if stage == 'decoder' else [self.decoder]
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def loss(self, inputs, data_samples):
        feats = self.extract_feat(inputs)
        losses = {}
        if self.stage == 'prune':
            logits = self.classify(feats)
            labels = self.stack_labels(data_samples).to(logits.device)
            losses['loss_cls'] = F.cross_entropy(logits, labels,
                                                 label_smoothing=self.label_smooth)
        if self.stage == 'decoder' or self.rec_weight > 0:
            recon = self.decoder(feats, inputs.shape[-2:])
            weight = 1.0 if self.stage == 'decoder' else self.rec_weight
            losses['loss_rec'] = weight * F.mse_loss(recon, inputs)
        return losses
