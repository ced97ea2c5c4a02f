"""Label-free pretext training for pruning with self-supervision (Caron et al.): RotNet, and its
semi-supervised variant S4L-RotNet."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

from mmrecprune.models.classifier import ImageClassifier
from mmrecprune.registry import MODELS

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees
_MASK64 = (1 << 64) - 1


def _splitmix64(x):
    """A well-mixed 64-bit hash of the integer ``x`` (SplitMix64's output function)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def rotate_batch(inputs):
    """Every image of ``inputs`` (N, C, H, W) at 0 / 90 / 180 / 270 degrees: ``(4N, C, H, W)``
    (all images at 0 degrees first, then at 90, ...) and the rotation labels ``(4N,)``."""
    if inputs.shape[-1] != inputs.shape[-2]:
        raise ValueError(f'RotNet rotates images by 90 degrees, which needs square inputs; got '
                         f'{tuple(inputs.shape[-2:])}: resize or crop to a square in the pipeline')
    rotated = torch.cat([torch.rot90(inputs, k, dims=(-2, -1)) for k in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=inputs.device).repeat_interleave(len(inputs))
    return rotated, labels


def is_labelled(sample_idx, fraction, seed):
    """Whether the sample with dataset index ``sample_idx`` keeps its label in S4L: a fixed
    pseudo-random share ``fraction`` of the indices, the same for a given ``seed`` in every
    epoch, process and run."""
    return _splitmix64((int(seed) << 32) + int(sample_idx)) / 2.0 ** 64 < fraction


@MODELS.register_module()
class RotNetClassifier(ImageClassifier):
    """RotNet: a 4-way head on the pooled backbone features predicts the rotation of every image,
    seen at 0 / 90 / 180 / 270 degrees (rotated on the fly, no copies on disk).

    With ``labelled_fraction > 0`` it is S4L-RotNet: a second linear head (``cls_head.fc``)
    adds cross-entropy on the un-rotated images whose label is kept (a fixed share of the
    dataset indices for ``seed``, see :func:`is_labelled`); the rotation loss uses every image.

    State-dict keys: ``backbone.*``, ``head.fc.*`` (rotation), ``cls_head.fc.*`` (S4L only), so a
    RotNet checkpoint starts a pruning run or a ticket like any classifier's.

    Args:
        backbone (dict): Any registered backbone; its last output is pooled.
        in_channels (int): Channels of that output.
        num_classes (int): Classes of the labelled task (S4L only). Defaults to 10.
        labelled_fraction (float): Share of labelled images in (0, 1], or 0 for RotNet alone.
        labelled_weight (float): Weight of the labelled cross-entropy. Defaults to 1.
        seed (int): Which images keep their labels. Defaults to 0.
        data_preprocessor, init_cfg: As for :class:`ImageClassifier`.

    Prediction (``mode='predict'``) returns, per image, ``pred_rotation`` (the predicted rotation
    of its four rotated copies) for :class:`~mmrecprune.evaluation.RotationAccuracy`.
    """

    def __init__(self, backbone, in_channels, num_classes=10, labelled_fraction=0.0,
                 labelled_weight=1.0, seed=0, data_preprocessor=None, init_cfg=None):
        if not isinstance(labelled_fraction, (int, float)) or not 0.0 <= labelled_fraction <= 1.0:
            raise ValueError(f'labelled_fraction must be in (0, 1] for S4L, or 0 for RotNet '
                             f'alone; got {labelled_fraction!r}')
        super().__init__(backbone, NUM_ROTATIONS, in_channels,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.labelled_fraction = float(labelled_fraction)
        self.labelled_weight = labelled_weight
        self.seed = seed
        if self.labelled_fraction > 0:
            self.cls_head = nn.Module()
            self.cls_head.fc = nn.Linear(in_channels, num_classes)

    def pooled(self, inputs):
        return self.pool(self.extract_feat(inputs))

    def loss(self, inputs, data_samples):
        rotated, rotations = rotate_batch(inputs)
        features = self.pooled(rotated)
        losses = dict(loss_rot=F.cross_entropy(self.head.fc(features), rotations))
        if self.labelled_fraction > 0:
            keep = torch.tensor([is_labelled(s.metainfo['sample_idx'], self.labelled_fraction,
                                             self.seed) for s in data_samples],
                                device=inputs.device)
            logits = self.cls_head.fc(features[:len(inputs)])  # the un-rotated copies
            labels = self.stack_labels(data_samples).to(logits.device)
            ce = F.cross_entropy(logits, labels, reduction='none')
            losses['loss_cls'] = self.labelled_weight * (ce * keep).sum() / keep.sum().clamp(
                min=1)
        return losses

    def predict(self, inputs, data_samples=None):
        rotated, _ = rotate_batch(inputs)
        pred = self.head.fc(self.pooled(rotated)).argmax(dim=1).view(NUM_ROTATIONS, -1).t()
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(inputs))]
        for sample, p in zip(data_samples, pred):
            sample.pred_rotation = p.detach()
        return data_samples
