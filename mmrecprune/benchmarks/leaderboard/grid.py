"""The leaderboard's grid: which methods it ranks against which baselines, their configs, the
levels and sizes it runs them at (``SCALES``), and the command line that picks them."""
import argparse
import os.path as osp

from mmrecprune import cli
from mmrecprune.benchmarks.probe import DET, SCENES64_ARGS, SCENES64_ROOT, SEG
from mmrecprune.benchmarks.stage_runner import add_run_options

DESCRIPTION = ('One leaderboard of every pruning method in the repo, at matched sparsity / '
               'FLOPs, over seeds.')
ONTHEFLY_CFG = 'configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py'
NM_CFG = 'configs/nm/nm-2to4_r18-w16_1r-1e_fashionmnist.py'
NM_LEVEL = 50.0  # 2:4 tickets are 50 % sparse: compared with magnitude pruning at 50 %
# the IMP loop ranking weights by first-order Taylor saliency: IMP's rounds, images and lr
IMP_TAYLOR_CFG = 'configs/imp/imp-taylor_r18-w16_7r-1e_fashionmnist.py'
STRUCTURED_CFGS = dict(psap='configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py',
                       l1_uniform='configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py',
                       l1_global='configs/l1/l1-global_r18-w16_1xb128-4e_fashionmnist.py',
                       random_uniform='configs/l1/random-uniform_r18-w16_1xb128-4e_fashionmnist.py')
RETRAIN_CFG = 'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py'
PROBE_CFG = 'configs/selfsup/linear-probe_r18-w16-ticket_fashionmnist.py'
DENSE_PROBE_CFG = 'configs/selfsup/linear-probe_r18-w16_fashionmnist.py'
SCENES = dict(  # size -> task -> (ticket config, dense config, last checkpoint, metric)
    probe64=dict(det=(DET[1], DET[0], 'epoch_12.pth', 'coco/bbox_mAP'),
                 seg=(SEG[1], SEG[0], 'iter_1000.pth', 'mIoU')),
    full=dict(  # the main job's 128x128 scenes (make demo's downstream configs)
        det=('configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py',
             'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
             'epoch_12.pth', 'coco/bbox_mAP'),
        seg=('configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py',
             'configs/downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py',
             'iter_1000.pth', 'mIoU')))
SCENES_DATA = dict(probe64=(SCENES64_ROOT, SCENES64_ARGS),
                   full=('data/fashion_scenes', ['--out-dir', 'data/fashion_scenes']))

# The RecPrune rows: method -> (its decoder stage's work dir name, --cfg-options of both of its
# stages). recprune_pooled reconstructs the input average-pooled 2x (rec_downsample=2), the
# cheaper variant, scored against RecPrune at the paper's full-resolution target.
RECPRUNE_VARIANTS = dict(recprune=('decoder', ()),
                         recprune_pooled=('decoder_pooled', ('model.rec_downsample=2', )))
OPT_IN = ('recprune_pooled', )  # run when named in --methods, not by default
UNSTRUCTURED = ('recprune', 'recprune_pooled', 'imp', 'imp_taylor', 'random', 'magnitude', 'nm',
                'onthefly', 'magnitude_scratch', 'rotnet', 'supervised_scratch')
STRUCTURED = ('psap', 'l1_uniform', 'l1_global', 'random_uniform')
# each method's paired comparison: what it must beat
# (on-the-fly and the self-supervised tickets train their own network from scratch on fewer
# images, so their baselines are pruned from networks trained the same way, not from the dense
# checkpoint the other rows start from)
BASELINES = dict(recprune='imp', recprune_pooled='recprune', imp='random', imp_taylor='imp',
                 magnitude='random', nm='magnitude', onthefly='magnitude_scratch',
                 rotnet='supervised_scratch', psap='l1_uniform', l1_uniform='random_uniform',
                 l1_global='l1_uniform', random='dense', random_uniform='dense')

# The sizes: ``default`` fits 90 minutes on 2 CPU cores; ``faithful`` is the embedded default at
# full size (every training image, the configs' own lengths; a GPU machine); ``smoke`` checks the
# plumbing in a few minutes.
SCALES = dict(
    smoke=dict(lottery_images=256, lottery_lr=0.03, prune_images=256, rounds=[1, 2],
               flops=[0.5], decoder_epochs=1, structured_epochs=4, onthefly_images=256,
               onthefly_epochs=2, retrain_images=256, retrain_epochs=2, probe_images=256,
               probe_epochs=1, val_images=256, scenes='probe64'),
    default=dict(lottery_images=10000, lottery_lr=0.03, prune_images=5000, rounds=[7, 11, 14],
                 flops=[0.5, 0.75], decoder_epochs=3, structured_epochs=4,
                 onthefly_images=5000, onthefly_epochs=6, retrain_images=5000,
                 retrain_epochs=3, probe_images=5000, probe_epochs=3, val_images=2000,
                 scenes='probe64'),
    faithful=dict(lottery_images=60000, lottery_lr=0.03, prune_images=60000,
                  rounds=[7, 11, 14, 18], flops=[0.5, 0.7, 0.75], decoder_epochs=3,
                  structured_epochs=4, onthefly_images=60000, onthefly_epochs=6,
                  retrain_images=60000, retrain_epochs=6, probe_images=60000, probe_epochs=3,
                  val_images=10000, scenes='full'),
)



def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument('--work-dir', default='work_dirs/leaderboard')
    parser.add_argument('--scale', choices=sorted(SCALES), default='default',
                        help='sizes of every run (see SCALES); single knobs: --set KEY=VALUE')
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                        help='override one size of the scale (a key of SCALES, not a config '
                             'key: config keys go to --cfg-options), e.g. prune_images=20000 '
                             'rounds=7,11 (lists comma-separated)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', choices=UNSTRUCTURED + STRUCTURED,
                        default=[m for m in UNSTRUCTURED + STRUCTURED if m not in OPT_IN],
                        help='default: all but %(opt_in)s (opt-in variants)' % dict(
                            opt_in=', '.join(OPT_IN)))
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--prune-options', nargs='*', default=[],
                        help='extra --cfg-options for the RecPrune and IMP runs only '
                             '(--cfg-options applies to every run)')
    parser.add_argument('--selfsup-dir', default='work_dirs/bench_selfsup',
                        help="bench_selfsup.py's work dir: the rotnet tickets are read from it")
    parser.add_argument('--scenes-levels', type=float, nargs='*', default=[],
                        help='levels (sparsity or FLOPs removed, in %%) whose tickets also get '
                             'the scenes probes, fine-tuned and frozen (~12 min of one worker '
                             'per ticket and seed)')
    parser.add_argument('--scenes-seeds', type=int, nargs='*', default=None,
                        help='seeds of the scenes probes (default: --seeds)')
    parser.add_argument('--scenes-methods', nargs='*', default=None,
                        choices=UNSTRUCTURED + STRUCTURED + ('dense', ),
                        help='methods whose tickets get the scenes probes, and dense for the '
                             'dense reference (default: --methods and dense)')
    parser.add_argument('--scenes-modes', nargs='+', default=['finetuned', 'frozen'],
                        choices=['finetuned', 'frozen'])
    parser.add_argument('--latency-repeats', type=int, default=30)
    add_run_options(parser)
    args = parser.parse_args(argv)
    args.size = resolve_scale(args.scale, args.set)
    if args.scenes_seeds is None:
        args.scenes_seeds = args.seeds
    if args.scenes_methods is None:
        args.scenes_methods = [*args.methods, 'dense']
    return args


def resolve_scale(scale, overrides):
    """The sizes of ``scale`` with ``KEY=VALUE`` overrides (unknown keys are refused)."""
    size = dict(SCALES[scale])
    for item in overrides:
        key, sep, value = item.partition('=')
        if not sep or key not in size or (key == 'scenes' and value not in SCENES):
            raise cli.CLIError(f'--set {item!r}: expected KEY=VALUE with KEY one of '
                               f'{sorted(size)} (scenes: one of {sorted(SCENES)})')
        size[key] = [type(size[key][0])(v) for v in value.split(',')] \
            if isinstance(size[key], list) else type(size[key])(value)  # scenes: probe64 | full
    for key in ('retrain_epochs', 'onthefly_epochs'):  # a warm-up epoch, then the cosine
        if size[key] < 2:
            raise cli.CLIError(f'--set {key}={size[key]}: these runs warm up for one epoch '
                               'and then decay; give them at least 2 epochs')
    if size['structured_epochs'] < 4:  # the configs' 3 pruning steps at epochs 0, 1, 2
        raise cli.CLIError(f'--set structured_epochs={size["structured_epochs"]}: the '
                           'structured configs prune at epochs 0, 1 and 2; give them at least 4 '
                           'epochs')
    return size


def sparsity_of(rounds):
    return 100 * (1 - 0.8 ** rounds)


def fraction_of(rounds, digits=4):
    """The fraction of weights ``rounds`` rounds of 20 % prune, as the runs are given it."""
    return round(1 - 0.8 ** rounds, digits)


def onthefly_ticket(args, seed, rounds):
    return osp.join(seed_dir(args, seed), f'onthefly_r{rounds}', 'tickets',
                    f'onthefly_p{round(100 * fraction_of(rounds))}.pth')


def level_key(kind, value):
    """Levels as printed: unstructured sparsity (%) from rounds, structured FLOPs removed (%)."""
    return round(sparsity_of(value) if kind == 'unstructured' else 100 * value, 1)



def data_options(images, val_images):
    return [f'train_dataloader.dataset.indices={images}',
            f'val_dataloader.dataset.indices={val_images}',
            f'test_dataloader.dataset.indices={val_images}']


def seed_dir(args, seed):
    return osp.join(args.work_dir, f'seed{seed}')

