"""Image classifier used to pretrain and prune backbones (mmpretrain-compatible keys)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from mmrecprune.registry import MODELS


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """Backbone + global average pooling + linear head, trained with cross-entropy.

    State-dict keys are ``backbone.*`` and ``head.fc.*`` as in mmpretrain, so a checkpoint
    loads into mmdet / mmseg backbones with ``init_cfg=dict(type='Pretrained',
    prefix='backbone.', checkpoint=...)`` and no key surgery.

    Args:
        backbone (dict): any registered backbone (default configs use ``mmdet.ResNet``);
            its last output feature map is pooled.
        num_classes (int): number of classes.
        in_channels (int): channels of the backbone's last output.
        label_smooth (float): label smoothing of the cross-entropy. Defaults to 0.
        data_preprocessor (dict, optional): e.g. ``ImgDataPreprocessor`` with mean / std.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, backbone, num_classes, in_channels, label_smooth=0.0,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.backbone = MODELS.build(backbone)
        self.head = nn.Module()
        self.head.fc = nn.Linear(in_channels, num_classes)
        self.label_smooth = label_smooth

    def extract_feat(self, inputs):
        feats = self.backbone(inputs)
        return feats if isinstance(feats, (tuple, list)) else (feats,)

    def classify(self, feats):
        return self.head.fc(self.pool(feats))

    def pool(self, feats):
        """Pool the last feature map; refuse one whose width the head cannot take."""
        pooled = F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
        if pooled.shape[1] != self.head.fc.in_features:
            raise ValueError(
                f'{type(self).__name__}: the backbone\'s last output has {pooled.shape[1]} '
                f'channels, the head takes in_channels={self.head.fc.in_features}; set '
                f'model.in_channels={pooled.shape[1]}, or the backbone\'s out_indices to the '
                'stage the head was built for')
        return pooled

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'tensor':
            return self.classify(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode {mode!r}; expected "tensor", "loss" or "predict"')

    @staticmethod
    def stack_labels(data_samples):
        return torch.cat([s.gt_label for s in data_samples])

    def loss(self, inputs, data_samples):
        logits = self.classify(self.extract_feat(inputs))
        labels = self.stack_labels(data_samples).to(logits.device)
        return dict(loss_cls=F.cross_entropy(logits, labels, label_smoothing=self.label_smooth))

    def predict(self, inputs, data_samples=None):
        scores = self.classify(self.extract_feat(inputs)).softmax(dim=1)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(scores))]
        for sample, score in zip(data_samples, scores):
            sample.pred_score = score.detach()
            sample.pred_label = score.argmax(dim=0, keepdim=True).detach()
        return data_samples
