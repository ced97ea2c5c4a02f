"""docs/en/advanced_guides/add_a_method.md works as written.

A block whose first line is ``# <path>.py`` is a file of the reader's project and is written
there (``configs/`` is a copy of the repository's, so the config block sits next to the configs
it inherits); the other Python blocks run in order in one namespace, in that project folder.
Before the first block that reads a run's output (``work_dirs/``), the guide's config is trained
by a real runner, shrunk to a few iterations on tiny Fashion-MNIST data, into the work dir
``tools/train.py`` would give it.
"""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.hooks import LotteryTicketHook
from mmrecprune.registry import PRUNERS
from mmrecprune.testing.sources import shrink_classifier_cfg
from tests.guide_project import guide_blocks, guide_path, reader_project

GUIDE = guide_path('add_a_method.md')


@pytest.fixture
def project(tmp_path, monkeypatch):
    with reader_project(tmp_path, monkeypatch, PRUNERS) as folder:
        yield folder


def train_the_guides_config(project, config):
    """Train ``config`` as tools/train.py would (work_dirs/<name>), shrunk; return the runner."""
    cfg = Config.fromfile(str(project / config))
    name = osp.splitext(osp.basename(config))[0]
    shrink_classifier_cfg(cfg, project / 'work_dirs' / name, max_epochs=cfg.train_cfg.max_epochs)
    cfg.load_from = None  # no pretrained classifier here; gradual pruning does not rewind
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_the_guide_has_a_pruner_a_config_and_scripts():
    blocks = guide_blocks(GUIDE)
    paths = [p for p, _ in blocks if p]
    assert 'my_project/pruners.py' in paths
    assert any(p.startswith('configs/') for p in paths)
    assert sum(p is None for p, _ in blocks) >= 2
    assert any('work_dirs/' in code for p, code in blocks if p is None)


def test_the_guide_runs(project, capsys):
    namespace = {'__name__': 'add_a_method_guide'}
    config, runner = None, None
    for path, code in guide_blocks(GUIDE):
        if path is not None:
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
            config = path if path.startswith('configs/') else config
            continue
        if 'work_dirs/' in code and runner is None:
            runner = train_the_guides_config(project, config)
        exec(compile(code, GUIDE, 'exec'), namespace)
    assert runner is not None
    # the guide's own pruner, built by the real hook from the config, pruned every round
    hook = next(h for h in runner.hooks if isinstance(h, LotteryTicketHook))
    assert type(hook.pruner).__name__ == 'GradualMagnitudePruner'
    assert type(hook.pruner).__module__ == 'my_project.pruners'
    assert hook.pruner.step_count == 3
    tickets = project / 'work_dirs' / 'gmp_r18-w16_3r-1e_fashionmnist' / 'tickets'
    assert sorted(p.name for p in tickets.glob('round_*.pth')) == [
        'round_1.pth', 'round_2.pth', 'round_3.pth']
    ticket = namespace['ticket']
    assert ticket.meta['sparsity'] == pytest.approx(0.8, abs=0.01)
    assert namespace['features'][-1].shape[1] == 64
    out = capsys.readouterr().out
    assert 'round 3: sparsity 0.80' in out and 'unstructured gmp' in out
