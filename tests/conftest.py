import itertools
import os
import os.path as osp

import pytest
from mmengine.config import Config

import mmrecprune  # noqa: F401
from mmrecprune.testing.sources import (MBV2_W05, ONE_SHOT_70_FILLED, STRUCTURED_50,  # noqa: F401
                                        UNSTRUCTURED_60, export_test_ticket,
                                        shrink_classifier_cfg)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if os.environ.get('PYTEST_XDIST_WORKER'):
    # `make test` runs two workers on two cores: one thread each, and the same for the
    # subprocesses they start (two threads each would oversubscribe the cores)
    import torch
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)
else:
    os.environ.setdefault('OMP_NUM_THREADS', '2')

#: the slowest modules (minutes each, most of it subprocesses), started first so that the two
#: workers of `make test` (--dist loadfile --no-loadscope-reorder) end together
SLOWEST_FIRST = ('tests/e2e/test_full_size_configs.py', 'tests/e2e/test_readme_quickstart.py',
                 'tests/e2e/test_check_model_zoo.py', 'tests/analysis/test_gpu_check.py',
                 'tests/e2e/test_intask_pruning.py')


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0], len(rank)))  # stable


def config_has_key(cfg, dotted):
    """Whether ``--cfg-options`` key ``dotted`` (``a.b.0.c``: list items by index) exists in
    ``cfg``."""
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def kernels_or_skip(*builds):
    """The compiled kernels each of ``builds`` (:mod:`mmrecprune.ops` builders) returns, the
    last one's result; the test skips, with the build's own error as the reason, where a
    compiler, ninja or AVX2 is missing."""
    from mmrecprune.ops import OpsUnavailable
    try:
        return [build() for build in builds][-1]
    except OpsUnavailable as error:
        pytest.skip(str(error))


def repo_path(*parts):
    return osp.join(REPO, *parts)


#: numbers the configs of :func:`tiny_cls_cfg` in this process (their experiment names)
_TINY_CFG_COUNT = itertools.count()


def tiny_cls_cfg(work_dir, config='configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py',
                 **sizes):
    """A real config from configs/, shrunk to a few iterations on a Fashion-MNIST subset (see
    :func:`mmrecprune.testing.sources.shrink_classifier_cfg`), with an ``experiment_name`` of
    its own.

    MMEngine keeps one MessageHub and one Visualizer per experiment name, which defaults to the
    config's name plus the start second: two runners of one config started in the same second
    of a test process shared their scalar history and the first one's log folder. Each config
    made here is named after its work dir and a counter instead, so runners share nothing by
    accident; a resumed run is a config of its own too (resuming loads the message hub's state
    from the checkpoint and does not compare names). A test that builds two runners from one
    config object gives the second its own name if it needs one.
    """
    cfg = shrink_classifier_cfg(Config.fromfile(repo_path(config)), work_dir, **sizes)
    cfg.experiment_name = f'{osp.basename(osp.normpath(str(work_dir)))}_{next(_TINY_CFG_COUNT)}'
    return cfg


@pytest.fixture(autouse=True)
def no_default_scope_left_behind():
    """Drop the MMEngine default scopes a test created (``init_default_scope`` keeps the newest
    one current for the rest of the process): a scope left by one test changed how a later
    test's registry lookups resolve (mmdet's CocoDataset pipeline after tests/test_registry)."""
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)


@pytest.fixture
def work_dir(tmp_path):
    return tmp_path


@pytest.fixture(scope='session')
def scenes(tmp_path_factory):
    """A tiny "Fashion-MNIST scenes" set (8 train / 4 test, 64x64); its root ends with '/'."""
    from mmrecprune.datasets.scenes import generate_scenes
    root = tmp_path_factory.mktemp('scenes')
    for split, n in (('train', 8), ('test', 4)):
        generate_scenes(str(root), split=split, num_scenes=n, canvas_size=64, seed=0)
    return str(root) + '/'


def shrink_downstream_cfg(cfg, work_dir, scenes, ticket):
    """A shipped mmdet / mmseg ticket config pointed at ``ticket`` and the tiny ``scenes``."""
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.ticket = ticket
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].batch_size = 4
        cfg[name].dataset.data_root = scenes
    if 'ann_file' in cfg.val_evaluator:
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = \
            scenes + 'annotations/instances_test.json'
    cfg.param_scheduler = []
    cfg.log_level = 'WARNING'
    cfg.visualizer.vis_backends = []
    cfg.default_hooks.pop('visualization', None)
    return cfg


def train_downstream(config, work_dir, scenes, ticket, length, base_channels=None):
    """Train the shipped ``config`` on ``ticket`` and the tiny ``scenes``; return the runner.

    ``length`` is epochs for an epoch-based (mmdet) config, iterations for an iteration-based
    (mmseg) one. ``base_channels``: the ticket's backbone width when it is not the configs' 16,
    so the neck / decode head input widths follow it (the one change a user would make too).
    """
    from mmengine.runner import Runner
    cfg = shrink_downstream_cfg(Config.fromfile(repo_path(config)), work_dir, scenes, ticket)
    if base_channels is not None:
        if cfg.model.get('neck'):
            cfg.model.neck.in_channels = [base_channels * 2**i for i in range(4)]
        else:
            cfg.model.decode_head.in_channels = base_channels * 8
    if 'max_epochs' in cfg.train_cfg:
        cfg.train_cfg.max_epochs = length
    else:
        cfg.train_cfg.max_iters = length
        cfg.default_hooks.checkpoint.interval = length
        cfg.model.data_preprocessor.size = (64, 64)
    cfg.train_cfg.val_interval = length
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@pytest.fixture(scope='module')
def single_thread():
    """Tiny tensors: one thread avoids contention on shared CPUs (much faster here). Modules opt
    in with ``pytestmark = pytest.mark.usefixtures('single_thread')``."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_DIST_OVERRIDES = """
model = dict(backbone=dict(base_channels=8), in_channels=64)
_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=8, dataset=dict(indices=64, pipeline=_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(indices=32, pipeline=_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
load_from = None
default_hooks = dict(logger=dict(interval=1))
"""


def tiny_dist_config(path, base, extra):
    """Write a config at ``path`` that shrinks the shipped ``base`` (relative to the repo) for a
    2-epoch DDP run and appends ``extra`` (the method's hook settings); return ``path``."""
    path.write_text(f"_base_ = '{REPO}/{base}'\n" + TINY_DIST_OVERRIDES + extra)
    return path


def free_port():
    """A TCP port nothing listens on now, for torchrun's rendezvous in the DDP tests."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def dist_train(config, work_dir, nproc=2):
    """Run ``bash tools/dist_train.sh CONFIG NPROC`` on CPU; return its stdout + stderr."""
    import subprocess
    import sys
    env = dict(os.environ, PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'],
               OMP_NUM_THREADS='1', PORT=free_port())
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), str(nproc), '--work-dir', str(work_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:] + '\n--- stderr ---\n'
                                    + result.stderr[-3000:])
    return result.stdout + result.stderr


@pytest.fixture(scope='session')
def training_checkpoint(tmp_path_factory):
    """``epoch_1.pth`` of a real (tiny) MMEngine training run: message hub, optimizer, meta."""
    from mmengine.runner import Runner
    work_dir = tmp_path_factory.mktemp('train')
    Runner.from_cfg(tiny_cls_cfg(work_dir, max_epochs=1, train_size=32)).train()
    return str(work_dir / 'epoch_1.pth')




def make_r18_tickets(folder, base_channels):
    """An unstructured (60 % sparse) and a structured (-50 % FLOPs) ticket of ResNet-18 at
    ``base_channels``; ``{kind: path}``."""
    cfg = dict(type='mmdet.ResNet', depth=18, base_channels=base_channels, out_indices=[3])
    return dict(unstructured=export_test_ticket(folder / 'round_4.pth', cfg, UNSTRUCTURED_60),
                structured=export_test_ticket(folder / 'slim.pth', cfg, STRUCTURED_50))




def assert_fills_kept(model, ticket_path):
    """After fine-tuning ``model`` on the ticket: every pruned entry still holds its fill
    value and some kept entries trained."""
    import torch

    from mmrecprune.tickets import load_ticket
    ticket = load_ticket(ticket_path)
    state = model.backbone.state_dict()
    moved = 0
    for name, mask in ticket.masks.items():
        fill = torch.broadcast_to(ticket.fill_values[name], mask.shape)
        assert torch.equal(state[name][~mask], fill[~mask]), name
        moved += int((state[name][mask] != ticket.state_dict[name][mask]).sum())
    assert moved > 0  # the kept weights trained


@pytest.fixture(scope='session')
def mbv2_ticket(tmp_path_factory):
    """A MobileNetV2-w0.5 ticket, 70 % pruned (first conv kept) with non-zero fill values."""
    return export_test_ticket(tmp_path_factory.mktemp('mbv2') / 'onthefly_p70.pth', MBV2_W05,
                              ONE_SHOT_70_FILLED)


@pytest.fixture(scope='session')
def r18_tickets(tmp_path_factory):
    """ResNet-18 tickets at base_channels=8 (see :func:`make_r18_tickets`)."""
    return make_r18_tickets(tmp_path_factory.mktemp('r18_tickets'), 8)


@pytest.fixture(scope='session')
def r18_w16_tickets(tmp_path_factory):
    """ResNet-18 tickets at the shipped configs' width, base_channels=16."""
    return make_r18_tickets(tmp_path_factory.mktemp('r18_w16_tickets'), 16)


@pytest.fixture(scope='session')
def r50_tickets(tmp_path_factory):
    """Standard-width ResNet-50 tickets made by the hooks in real (tiny) runs: one IMP round
    (unstructured, 20 %) and one L1-uniform step (slim, -50 % FLOPs)."""
    from mmengine.runner import Runner
    tickets = {}
    for kind, config in (('unstructured', 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'),
                         ('structured', 'configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py')):
        work_dir = tmp_path_factory.mktemp(f'r50_{kind}')
        cfg = tiny_cls_cfg(work_dir, config=config, train_size=8, val_size=8, batch_size=4,
                           max_epochs=1, base_channels=64)
        cfg.model.backbone.depth = 50
        cfg.model.in_channels = 2048
        cfg.load_from = None
        cfg.train_cfg.val_interval = 1
        hook = cfg.custom_hooks[0]
        if kind == 'unstructured':
            hook.update(rounds=1, epochs_per_round=1)
        else:
            hook.update(example_input_shape=(1, 3, 32, 32))
            hook.pruner.update(num_steps=1)
        Runner.from_cfg(cfg).train()
        name = 'round_1.pth' if kind == 'unstructured' else 'slim.pth'
        tickets[kind] = str(work_dir / 'tickets' / name)
    return tickets


@pytest.fixture(scope='session')
def r50_nm_ticket(tmp_path_factory):
    """A standard-width ResNet-50 2:4 ticket made by the hook in a real (tiny) run of
    configs/nm/nm-2to4_r18-w16_1r-1e_fashionmnist.py (one IMP round with ``pattern='2:4'``)."""
    from mmengine.runner import Runner
    work_dir = tmp_path_factory.mktemp('r50_nm')
    cfg = tiny_cls_cfg(work_dir, config='configs/nm/nm-2to4_r18-w16_1r-1e_fashionmnist.py',
                       train_size=8, val_size=8, batch_size=4, max_epochs=1, base_channels=64)
    cfg.model.backbone.depth = 50
    cfg.model.in_channels = 2048
    cfg.load_from = None
    cfg.train_cfg.val_interval = 1
    Runner.from_cfg(cfg).train()
    return str(work_dir / 'tickets' / 'round_1.pth')


def half_width_masks(model, groups):
    """Keep, in every channel group, the half of its channels (rounded up) with the largest
    filter L1 norm: a fixed structured cut for the engine tests."""
    import torch
    from mmrecprune.sparsity import L1Importance, group_importances
    out = {}
    for name, scores in group_importances(model, groups, L1Importance()).items():
        order = torch.argsort(scores, descending=True, stable=True)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[order[:scores.numel() - scores.numel() // 2]] = True
        out[name] = keep
    return out
