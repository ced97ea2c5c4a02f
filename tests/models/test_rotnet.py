"""RotNetClassifier / S4L and RotationAccuracy on real backbones and data samples."""
import pytest
import torch
from mmengine.structures import BaseDataElement

from mmrecprune.evaluation import RotationAccuracy
from mmrecprune.models.rotnet import is_labelled, rotate_batch
from mmrecprune.registry import MODELS

BACKBONE = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=(3, ))


def _samples(n, start=0):
    return [BaseDataElement(metainfo=dict(sample_idx=start + i), gt_label=torch.tensor([i % 10]))
            for i in range(n)]


def test_rotations_are_made_on_the_fly_and_labelled_by_quarter_turns():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (8, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[:2], x)
    assert torch.equal(rotated[2], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(rotated[6], torch.rot90(x[0], 3, dims=(-2, -1)))
    with pytest.raises(ValueError, match='needs square inputs'):
        rotate_batch(torch.zeros(1, 3, 4, 6))


def test_rotnet_loss_uses_no_labels_and_s4l_only_the_kept_ones():
    torch.manual_seed(0)
    rotnet = MODELS.build(dict(type='mmrecprune.RotNetClassifier', backbone=BACKBONE, in_channels=64))
    x = torch.randn(4, 3, 32, 32)
    samples = _samples(4)
    losses = rotnet.loss(x, samples)
    assert set(losses) == {'loss_rot'}
    for s in samples:  # garbage labels change nothing
        s.gt_label = torch.tensor([7])
    torch.testing.assert_close(rotnet.loss(x, samples)['loss_rot'], losses['loss_rot'])

    s4l = MODELS.build(dict(type='mmrecprune.RotNetClassifier', backbone=BACKBONE, in_channels=64,
                            labelled_fraction=0.5, seed=3))
    assert 'cls_head.fc.weight' in s4l.state_dict()
    samples = _samples(16)
    kept = [s for s in samples if is_labelled(s.sample_idx, 0.5, 3)]
    assert 0 < len(kept) < 16
    s4l.eval()  # fixed BN statistics: the two passes see the same features
    x = torch.randn(16, 3, 32, 32)
    s4l.loss(x, samples)['loss_cls'].backward()
    grad = s4l.cls_head.fc.weight.grad.clone()
    s4l.zero_grad()
    for s in samples:  # change only the hidden labels: the gradient must not move
        if not is_labelled(s.sample_idx, 0.5, 3):
            s.gt_label = torch.tensor([9])
    s4l.loss(x, samples)['loss_cls'].backward()
    torch.testing.assert_close(s4l.cls_head.fc.weight.grad, grad)


def test_labelled_share_is_fixed_per_seed_and_bad_fractions_are_refused():
    first = [is_labelled(i, 0.1, 0) for i in range(20000)]
    assert first == [is_labelled(i, 0.1, 0) for i in range(20000)]
    assert abs(sum(first) / 20000 - 0.1) < 0.01
    assert first != [is_labelled(i, 0.1, 1) for i in range(20000)]
    for bad in (-0.1, 1.5, 'all'):
        with pytest.raises(ValueError, match=r'labelled_fraction must be in \(0, 1\]'):
            MODELS.build(dict(type='mmrecprune.RotNetClassifier', backbone=BACKBONE, in_channels=64,
                              labelled_fraction=bad))


def test_prediction_and_rotation_accuracy():
    rotnet = MODELS.build(dict(type='mmrecprune.RotNetClassifier', backbone=BACKBONE, in_channels=64))
    out = rotnet.predict(torch.randn(3, 3, 32, 32), _samples(3))
    assert all(s.pred_rotation.shape == (4, ) for s in out)
    metric = RotationAccuracy()
    metric.process(None, [dict(pred_rotation=torch.tensor([0, 1, 2, 3])),
                          dict(pred_rotation=torch.tensor([0, 1, 0, 0]))])
    assert metric.compute_metrics(metric.results) == dict(top1=75.0)
