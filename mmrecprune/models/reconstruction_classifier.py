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

    The reconstruction target is the normalised input (the output of the data preprocessor),
    average-pooled by ``rec_downsample`` when that is above 1.
    The backbone must output every stage (``out_indices=(0, 1, 2, 3)``); classification uses
    the last one.

    Args:
        decoder (dict): decoder config, e.g. ``InverseResNetDecoder``.
        stage (str): ``'decoder'`` or ``'prune'``.
        rec_weight (float): lambda. Defaults to 10 (the paper's value).
        rec_downsample (int): the decoder reconstructs the input average-pooled by this factor
            (its last upsampling goes to that size). Defaults to 1, the input itself (the
            paper). 2 suits inputs upsampled from half their size (the embedded default's
            Fashion-MNIST, 28 -> 56 px): the target keeps their detail and the decoder's
            full-resolution head, most of its cost, does a quarter of the work
            (configs/recprune/README.md measures the cost and the tickets).
        **kwargs: :class:`ImageClassifier` arguments.
    """

    def __init__(self, decoder, stage='prune', rec_weight=10.0, rec_downsample=1, **kwargs):
        super().__init__(**kwargs)
        if stage not in STAGES:
            raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
        if rec_weight < 0:
            raise ValueError(f'rec_weight (lambda) must be >= 0, got {rec_weight}')
        if isinstance(rec_downsample, bool) or not isinstance(rec_downsample, int) \
                or rec_downsample < 1:
            raise ValueError(f'rec_downsample must be an integer >= 1 (1: the input itself), '
                             f'got {rec_downsample!r}')
        self.rec_downsample = rec_downsample
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
            target = inputs if self.rec_downsample == 1 else F.avg_pool2d(
                inputs, self.rec_downsample, ceil_mode=True)
            recon = self.decoder(feats, target.shape[-2:])
            weight = 1.0 if self.stage == 'decoder' else self.rec_weight
            losses['loss_rec'] = weight * F.mse_loss(recon, target)
        return losses
