"""Every full-size config (ImageNet, COCO, ADE20K) runs two training iterations at its real
input size, unchanged but for its length and per-GPU batch, with ``--auto-scale-lr`` on 2 CPU
processes (gloo): the pretraining through ``tools/dist_train.sh CONFIG 2``, the others through
the same ``tools/train.py`` code in one launch (see :class:`UserDirectory`), on tiny synthetic
data sets in the real
on-disk layouts, in a working directory laid out as a user's: ``data/imagenet``,
``data/coco``, ``data/ade/ADEChallengeData2016`` and ``work_dirs/``.

The runs form the pipeline the configs describe: the pretraining's checkpoint is the
``load_from`` of the pruning configs and the ``pretrained`` of the dense detector and segmentor,
the RecPrune decoder stage's checkpoint starts the RecPrune rounds, and their ticket goes into
the ticket detector and segmentor; each file is put where the next config's default path looks
for it (e.g. ``epoch_1.pth`` is copied to the ``epoch_90.pth`` the pruning configs name).

Slow (the suite's slowest module, a few minutes on 2 cores): the four COCO / ADE20K runs take
most of it, one 1333x800 or 512x512 image per process and iteration. Every run happens in the
module's fixture, so `make test`'s --durations show the whole module as the set-up of its first
test.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

from mmrecprune.testing.synthetic_layouts import write_layouts
from tests.conftest import REPO, free_port

LOADER = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: one image per process and iteration, loaded in the main process
SMALL_LOADERS = [f'{loader}.{key}={value}' for loader in LOADER for key, value in
                 (('batch_size', 1), ('num_workers', 0), ('persistent_workers', False))]
ONE_EPOCH = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1']
ONE_ROUND = ONE_EPOCH + ['custom_hooks.0.rounds=1', 'custom_hooks.0.epochs_per_round=1']
ONE_STEP = ONE_EPOCH + ['custom_hooks.0.interval=1', 'custom_hooks.0.pruner.num_steps=1']
TICKET = 'work_dirs/recprune_r50_11r-10e_8xb32_imagenet/tickets/round_7.pth'
PRETRAINED = 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth'

# name: (config, extra --cfg-options, [(file the run writes, where the next configs look)])
RUNS = {
    'resnet50_8xb32-90e_imagenet': (
        'configs/pretrain/resnet50_8xb32-90e_imagenet.py', ONE_EPOCH,
        [('work_dirs/resnet50_8xb32-90e_imagenet/epoch_1.pth', PRETRAINED)]),
    'imp_r50_11r-10e_8xb32_imagenet': ('configs/imp/imp_r50_11r-10e_8xb32_imagenet.py',
                                       ONE_ROUND, []),
    'nm-2to4_imp_r50_4r-10e_8xb32_imagenet': (
        'configs/nm/nm-2to4_imp_r50_4r-10e_8xb32_imagenet.py', ONE_ROUND, []),
    'l1-uniform_r50_8xb32-30e_imagenet': (
        'configs/l1/l1-uniform_r50_8xb32-30e_imagenet.py', ONE_STEP, []),
    'psap_r50_8xb32-30e_imagenet': ('configs/psap/psap_r50_8xb32-30e_imagenet.py', ONE_STEP, []),
    'recprune_r50_decoder-stage_8xb32_imagenet': (
        'configs/recprune/recprune_r50_decoder-stage_8xb32_imagenet.py', ONE_EPOCH,
        [('work_dirs/recprune_r50_decoder-stage_8xb32_imagenet/epoch_1.pth',
          'work_dirs/recprune_r50_decoder-stage_8xb32_imagenet/epoch_10.pth')]),
    'recprune_r50_11r-10e_8xb32_imagenet': (
        'configs/recprune/recprune_r50_11r-10e_8xb32_imagenet.py', ONE_ROUND,
        [('work_dirs/recprune_r50_11r-10e_8xb32_imagenet/tickets/round_1.pth', TICKET)]),
    'rotnet-imp_r50_8xb192-90e_imagenet': (
        'configs/selfsup/rotnet-imp_r50_8xb192-90e_imagenet.py',
        ONE_ROUND + ['custom_hooks.0.pruner.rewind_iter=1'], []),
    'onthefly_r18_8xb32-90e_imagenet': ('configs/onthefly/onthefly_r18_8xb32-90e_imagenet.py',
                                        ONE_EPOCH + ['custom_hooks.0.pruner.warmup_iters=1'],
                                        []),
    'onthefly_r50_8xb32-90e_imagenet': ('configs/onthefly/onthefly_r50_8xb32-90e_imagenet.py',
                                        ONE_EPOCH + ['custom_hooks.0.pruner.warmup_iters=1'],
                                        []),
    'onthefly_mobilenetv2_8xb32-90e_imagenet': (
        'configs/onthefly/onthefly_mobilenetv2_8xb32-90e_imagenet.py',
        ONE_EPOCH + ['custom_hooks.0.pruner.warmup_iters=1'], []),
    'retinanet_r50_fpn_1x_coco': ('configs/downstream/mmdet/retinanet_r50_fpn_1x_coco.py',
                                  ONE_EPOCH, []),
    'retinanet_r50-ticket_fpn_1x_coco': (
        'configs/downstream/mmdet/retinanet_r50-ticket_fpn_1x_coco.py', ONE_EPOCH, []),
    'fcn_r50-d8_4xb4-80k_ade20k-512x512': (
        'configs/downstream/mmseg/fcn_r50-d8_4xb4-80k_ade20k-512x512.py',
        ['train_cfg.max_iters=2', 'train_cfg.val_interval=2'], []),
    'fcn_r50-ticket-d8_4xb4-80k_ade20k-512x512': (
        'configs/downstream/mmseg/fcn_r50-ticket-d8_4xb4-80k_ade20k-512x512.py',
        ['train_cfg.max_iters=2', 'train_cfg.val_interval=2'], []),
}
#: which runs write the files a run reads by default
NEEDS = {
    'imp_r50_11r-10e_8xb32_imagenet': ['resnet50_8xb32-90e_imagenet'],
    'nm-2to4_imp_r50_4r-10e_8xb32_imagenet': ['resnet50_8xb32-90e_imagenet'],
    'l1-uniform_r50_8xb32-30e_imagenet': ['resnet50_8xb32-90e_imagenet'],
    'psap_r50_8xb32-30e_imagenet': ['resnet50_8xb32-90e_imagenet'],
    'recprune_r50_decoder-stage_8xb32_imagenet': ['resnet50_8xb32-90e_imagenet'],
    'recprune_r50_11r-10e_8xb32_imagenet': ['recprune_r50_decoder-stage_8xb32_imagenet'],
    'retinanet_r50_fpn_1x_coco': ['resnet50_8xb32-90e_imagenet'],
    'retinanet_r50-ticket_fpn_1x_coco': ['recprune_r50_11r-10e_8xb32_imagenet'],
    'fcn_r50-d8_4xb4-80k_ade20k-512x512': ['resnet50_8xb32-90e_imagenet'],
    'fcn_r50-ticket-d8_4xb4-80k_ade20k-512x512': ['recprune_r50_11r-10e_8xb32_imagenet'],
}
#: runs whose config prunes, and so must leave a ticket in work_dirs/NAME/tickets/
PRUNING = {name for name, (config, _, _) in RUNS.items()
           if not re.search(r'/(pretrain|downstream)/|decoder-stage', config)}


class UserDirectory:
    """A user's working directory with the data sets in place, where every config of ``RUNS``
    has run once, in order (each after the runs whose files it reads).

    The first (the pretraining) goes through ``tools/dist_train.sh CONFIG 2``, as a user
    starts it; the other 14 go through the same ``tools/train.py`` code
    (:func:`mmrecprune.training.main`) in one 2-process launch
    (:mod:`mmrecprune.testing.train_many`), which saves starting Python and OpenMMLab 28
    times: about half of this module's time.
    """

    def __init__(self, root):
        self.root = str(root)
        write_layouts(self.root)
        names = list(RUNS)
        first, rest = names[0], names[1:]
        for name in rest:  # RUNS lists every run after the runs it reads from
            assert all(names.index(need) < names.index(name) for need in NEEDS.get(name, ()))
        self.outputs = {first: self._launch([osp.join(REPO, 'tools/dist_train.sh'),
                                             *self._argv(first)[:1], '2',
                                             *self._argv(first)[1:]])}
        self._hand_over(first)
        plan = osp.join(self.root, 'plan.json')
        with open(plan, 'w') as f:
            json.dump([dict(name=n, argv=[*self._argv(n), '--launcher', 'pytorch'],
                            hand_over=[[osp.join(self.root, made), osp.join(self.root, wanted)]
                                       for made, wanted in RUNS[n][2]]) for n in rest], f)
        code, log = self._launch(['-m', 'torch.distributed.run', '--nproc_per_node', '2',
                                  '--master_port', free_port(), '-m',
                                  'mmrecprune.testing.train_many', plan], python=True)
        for name in rest:
            section = re.search(rf'=== begin {re.escape(name)} ===\n(.*?)'
                                rf'=== (end|failed) {re.escape(name)} ===', log, re.S)
            if section is None:
                self.outputs[name] = (1, f'{name} did not run (launch exit {code}):\n{log}')
            else:
                self.outputs[name] = (0 if section[2] == 'end' else 1, section[1])

    def run(self, name):
        return self.outputs[name]

    def _argv(self, name):
        config, options, _ = RUNS[name]
        return [osp.join(REPO, config), '--auto-scale-lr', '--cfg-options', *SMALL_LOADERS,
                'default_hooks.logger.interval=1', *options]

    def _hand_over(self, name):
        if self.outputs[name][0] == 0:
            for made, wanted in RUNS[name][2]:
                os.makedirs(osp.dirname(osp.join(self.root, wanted)), exist_ok=True)
                shutil.copy(osp.join(self.root, made), osp.join(self.root, wanted))

    def _launch(self, args, python=False):
        env = dict(os.environ, OMP_NUM_THREADS='1', PORT=free_port(),
                   PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
        cmd = [sys.executable, *args] if python else ['bash', *args]
        result = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True,
                                timeout=1800)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope='module')
def user_dir(tmp_path_factory):
    return UserDirectory(tmp_path_factory.mktemp('user'))


@pytest.mark.parametrize('name', list(RUNS))
def test_full_size_config_runs_two_iterations(user_dir, name):
    returncode, log = user_dir.run(name)
    assert returncode == 0, log[-4000:]
    # both processes ran, each with one image per iteration: the lr follows the total batch
    assert 'current batch size is 2. Scaling the original LR' in log, log[-2000:]
    assert re.search(r'(Epoch\(train\) \[1\]\[2/2\]|Iter\(train\) \[2/2\])', log), log[-2000:]
    work_dir = osp.join(user_dir.root, 'work_dirs', name)
    assert glob.glob(osp.join(work_dir, '*.pth')), os.listdir(work_dir)
    if name in PRUNING:
        from mmrecprune.tickets import load_ticket
        tickets = glob.glob(osp.join(work_dir, 'tickets', '*.pth'))
        assert tickets, f'{name} wrote no ticket: {os.listdir(work_dir)}'
        for path in tickets:
            load_ticket(path)  # checked against the ticket schema
