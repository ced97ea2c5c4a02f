"""What the pruning benchmarks share: their inputs (the dense checkpoint, the 64x64 scenes) and
the downstream probe, RetinaNet and Semantic FPN on those scenes (a quarter of the default's
pixels), one detector and one segmenter per backbone."""
import os.path as osp
import sys

from .stage_runner import check_pretrained, train_and_test

PRETRAIN_CFG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
# the RecPrune / IMP loop of the embedded default (RecPrune starts from its decoder stage)
DECODER_CFG = 'configs/recprune/recprune_r18-w16_decoder-stage_fashionmnist.py'
LOTTERY_CFGS = dict(recprune='configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py',
                    imp='configs/imp/imp_r18-w16_7r-1e_fashionmnist.py')
DET = ('configs/downstream/mmdet/retinanet_r18-w16_fpn_probe_fashionscenes64.py',
       'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_probe_fashionscenes64.py')
SEG = ('configs/downstream/mmseg/fpn_r18-w16_probe_fashionscenes64.py',
       'configs/downstream/mmseg/fpn_r18-w16-ticket_probe_fashionscenes64.py')
# the frozen-backbone probe: every stage frozen, BN in eval mode; only the neck and heads train
FROZEN = ['model.backbone.frozen_stages=4', 'model.backbone.norm_eval=True']
SCENES64_ROOT = 'data/fashion_scenes_64'
SCENES64_ARGS = ['--out-dir', SCENES64_ROOT, '--canvas-size', '64', '--min-scale', '20',
                 '--max-scale', '40', '--max-items', '3']


def prepare_inputs(pipe, pretrained):
    """Train the dense classifier if ``pretrained`` is missing; write the 64x64 scenes."""
    if not osp.isfile(check_pretrained(pretrained)):
        pipe.run('pretrain', [[sys.executable, 'tools/train.py', PRETRAIN_CFG, '--work-dir',
                               osp.dirname(pretrained)]], [pretrained])
    pipe.run('scenes64', [[sys.executable, 'tools/dataset_converters/make_fashion_scenes.py',
                           *SCENES64_ARGS]],
             [osp.join(SCENES64_ROOT, 'annotations', 'instances_test.json')])


def probe_downstream(pipe, tag, root, seed, init_option, dense=False):
    """Fine-tune and test the probe detector and segmenter on one backbone.

    ``init_option`` points them at it (``model.backbone.ticket=...`` for a ticket,
    ``model.backbone.init_cfg.checkpoint=...`` with ``dense=True``). Returns
    ``dict(mAP=..., mIoU=...)`` in percent (None from a report-only pipeline that lacks a run).
    """
    opts = ['--cfg-options', init_option, f'randomness.seed={seed}']
    det = train_and_test(pipe, f'det/{tag}/seed{seed}', DET[0] if dense else DET[1],
                         osp.join(root, 'det'), 'epoch_12.pth', extra=opts)
    seg = train_and_test(pipe, f'seg/{tag}/seed{seed}', SEG[0] if dense else SEG[1],
                         osp.join(root, 'seg'), 'iter_1000.pth', extra=opts)
    if det is None or seg is None:  # a report-only pipeline and a run still missing
        return None
    return dict(mAP=100 * det['metrics']['coco/bbox_mAP'], mIoU=seg['metrics']['mIoU'])

