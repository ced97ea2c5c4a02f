"""`type='mmrecprune.X'` and `custom_imports` resolve from mmdet and mmseg scopes; criteria
registered outside the package drive the pruners."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

from mmrecprune.registry import (CRITERIA, DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPERS,
                                 PRUNERS)
from mmrecprune.sparsity import WeightCriterion


def test_every_module_is_registered():
    assert MODELS.get('ImageClassifier') is not None
    assert MODELS.get('PrunedBackbone') is not None
    assert HOOKS.get('LotteryTicketHook') is not None
    assert OPTIM_WRAPPERS.get('MaskedOptimWrapper') is not None
    assert DATASETS.get('FashionMNIST') is not None
    assert METRICS.get('Accuracy') is not None


def test_mmdet_and_mmseg_models_with_mmrecprune_backbone(tmp_path):
    # a real detector / segmenter from our _base_ configs, backbone given as an mmrecprune type
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    from mmrecprune.models import ImageClassifier  # noqa: F401

    backbone = dict(type='mmrecprune.ImageClassifier', num_classes=3, in_channels=64,
                    backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8))
    init_default_scope('mmdet')
    assert isinstance(MMDET_MODELS.build(backbone), ImageClassifier)

    det_cfg = Config.fromfile('configs/_base_/models/retinanet_r18-w16_fpn.py').model
    det_cfg.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=str(_ticket(tmp_path)),
                            out_indices=(0, 1, 2, 3))
    det_cfg.neck.in_channels = [8, 16, 32, 64]
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MMDET_MODELS.build(det_cfg)
    feats = det.extract_feat(torch.rand(1, 3, 64, 64))
    assert len(feats) == 4

    seg_cfg = Config.fromfile('configs/_base_/models/fcn_r18-w16-d8.py').model
    seg_cfg.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=str(_ticket(tmp_path)),
                            out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1),
                            dilations=(1, 1, 2, 4))
    seg_cfg.decode_head.in_channels = 64
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = MMSEG_MODELS.build(seg_cfg)
    out = seg(torch.rand(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 11, 8, 8)


def _ticket(tmp_path):
    from mmdet.models.backbones import ResNet

    from mmrecprune.tickets import save_ticket
    path = tmp_path / 'dense_ticket.pth'
    if not path.exists():
        cfg = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3])
        net = ResNet(depth=18, base_channels=8)
        save_ticket(str(path), cfg, net.state_dict(), method='dense')
    return path


def test_custom_imports_config_resolves(tmp_path):
    cfg = Config.fromfile('configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py')
    assert cfg.custom_imports.imports == ['mmrecprune']
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert model.head.fc.out_features == 10


def test_unknown_mmrecprune_type_is_a_clear_error():
    from mmdet.registry import MODELS as MMDET_MODELS
    init_default_scope('mmdet')
    with pytest.raises(KeyError, match='mmrecprune.NoSuchBackbone is not in the mmdet::model registry'):
        MMDET_MODELS.build(dict(type='mmrecprune.NoSuchBackbone'))


# ---- criteria: a user's own, registered here (outside the package), drives both pruner kinds --
@CRITERIA.register_module(force=True)
class TestInverseMagnitude(WeightCriterion):
    """Keeps the *smallest* weights: the opposite of magnitude, so a test sees it was used."""

    def score(self, weight, grad):
        return 1.0 / (weight.abs() + 1e-12)


def _classifier():
    from mmdet.models.backbones import ResNet

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet(depth=18, base_channels=8, out_indices=(3, ))
            self.head = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.backbone(x)[-1].mean((2, 3)))

    torch.manual_seed(0)
    return Classifier()


def test_builtin_criteria_are_registered_and_build_from_any_scope():
    from mmrecprune.sparsity import CRITERION_TYPES, TaylorImportance
    assert set(CRITERION_TYPES) <= set(CRITERIA.module_dict)
    for scope in ('mmrecprune', 'mmdet', 'mmseg'):
        with DefaultScope.overwrite_default_scope(scope):
            assert isinstance(CRITERIA.build(dict(type='mmrecprune.Taylor')), TaylorImportance)
            assert isinstance(CRITERIA.build(dict(type='Taylor')), TaylorImportance)
    with pytest.raises(ValueError, match="unknown importance 'NoSuch'; registered criteria"):
        CRITERIA.build(dict(type='NoSuch'))


def test_a_criterion_registered_outside_the_package_drives_both_pruner_kinds():
    importance = dict(type='mmrecprune.TestInverseMagnitude')
    # unstructured: the largest weights go
    imp = PRUNERS.build(dict(type='IterativeMagnitudePruner', rewind_to='none',
                             importance=importance))
    assert isinstance(imp.importance, TestInverseMagnitude)
    imp.attach(_classifier())
    before = {n: p.detach().abs().clone() for n, p in imp.params.items()}
    imp.step()
    pruned = torch.cat([before[n][~m] for n, m in imp.masks.items()])
    kept = torch.cat([before[n][m] for n, m in imp.masks.items()])
    assert imp.sparsity == pytest.approx(0.2, abs=1e-3) and pruned.min() >= kept.max()
    assert imp.ticket_content()['meta']['importance'] == importance

    # structured: in every group the channels with the lowest summed scores go
    structured = PRUNERS.build(dict(type='L1UniformPruner', target=dict(flops=0.3),
                                    num_steps=1, importance=importance))
    model = _classifier()
    structured.attach(model, torch.randn(1, 3, 32, 32))
    scores = {g.name: TestInverseMagnitude()(model, g) for g in structured.groups}
    structured.step()
    for name, keep in structured.masks.items():
        assert not keep.all() and scores[name][~keep].max() <= scores[name][keep].min()
    assert structured.ticket_content()['meta']['importance'] == importance

    # and through the hooks, as a training config builds them
    from mmrecprune.hooks import LotteryTicketHook, StructuredPruningHook
    hooks = (LotteryTicketHook(rounds=2, epochs_per_round=1, pruner=dict(
                 type='IterativeMagnitudePruner', importance=importance)),
             StructuredPruningHook(pruner=dict(type='PSAPPruner', importance=importance)))
    assert all(isinstance(h.pruner.importance, TestInverseMagnitude) for h in hooks)
