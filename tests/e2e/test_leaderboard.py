"""tools/benchmarks/leaderboard.py: its plan names configs and options that exist, and every
benchmark has a faithful scale. (The runs themselves are the configs' and tools' own, tested
elsewhere; a smoke-scale run takes ~10 minutes and is not part of the suite. The leaderboard's
sizes, tables and paired differences: tests/benchmarks/test_leaderboard.py.)"""
import os.path as osp
import re
import shlex
import sys

import pytest
import torch
from mmengine.config import Config

from mmrecprune.benchmarks import leaderboard
from tests.conftest import REPO, config_has_key


# options that add a key the configs leave to a default (the dataset's, the runner's,
# PrunedBackbone's)
NEW_KEYS = {f'{split}_dataloader.dataset.indices' for split in ('train', 'val', 'test')} | {
    'randomness.seed', 'model.backbone.masks', 'model.backbone.seed',
    'model.backbone.frozen_stages', 'model.backbone.norm_eval'}


@pytest.mark.parametrize('scale', ['smoke', 'faithful'])
def test_dry_run_plans_existing_configs_and_options(scale, tmp_path, capsys):
    """Every planned tools/train.py / tools/test.py command names a config that exists, and
    every --cfg-options key it sets is a key of that config (a typo would silently add an
    unused key and change nothing)."""
    pretrained = tmp_path / 'dense.pth'
    torch.save({'state_dict': {}}, pretrained)  # exists: no pretraining stage is planned
    leaderboard.main(['--scale', scale, '--seeds', '0', '--work-dir', str(tmp_path / 'lb'),
                      '--pretrained', str(pretrained), '--scenes-levels', '20', '50', '91.4',
                      '--dry-run'])
    lines = [line.split('would run: ', 1)[1] for line in capsys.readouterr().out.splitlines()
             if 'would run: ' in line]
    tools = [shlex.split(line) for line in lines if ' tools/t' in line]
    methods = {re.search(r'--work-dir \S+/seed0/(?:scores/)?([a-z_0-9]+)', ' '.join(c))
               .group(1).rstrip('_0123456789') for c in tools}
    assert {'decoder', 'recprune', 'imp', 'magnitude_r', 'onthefly_r', 'psap_f', 'l1_uniform_f',
            'l1_global_f', 'random_uniform_f', 'dense', 'random', 'onthefly', 'psap', 'nm_r',
            'magnitude_s', 'nm'} <= methods
    checked = 0
    for cmd in tools:
        config = cmd[2]
        assert osp.isfile(osp.join(REPO, config)), config
        cfg = Config.fromfile(osp.join(REPO, config)).to_dict()
        options = cmd[cmd.index('--cfg-options') + 1:] if '--cfg-options' in cmd else []
        for option in options:
            key = option.split('=', 1)[0]
            if key in NEW_KEYS or key == 'load_from':
                continue
            assert config_has_key(cfg, key), f'{config}: --cfg-options {key} is not a key of it'
            checked += 1
    assert checked > 100
    # the scenes probes ran for the ticket levels asked for, fine-tuned and frozen
    scenes = [' '.join(c) for c in tools if 'fashionscenes' in ' '.join(c)]
    assert all(('fashionscenes64' in c) == (scale == 'smoke') for c in scenes)
    assert any('frozen_stages=4' in c for c in scenes)
    assert any('frozen_stages=4' not in c for c in scenes)


def test_nm_rows_against_magnitude_at_half(tmp_path, capsys):
    """The 2:4 rows: per seed, one round of the 2:4 config and one round of the IMP loop
    pruning 50 % by magnitude, each ticket re-trained (top-1) and linearly probed; the paired
    difference of nm is against magnitude at 50 %."""
    pretrained = tmp_path / 'dense.pth'
    torch.save({'state_dict': {}}, pretrained)
    leaderboard.main(['--scale', 'smoke', '--methods', 'nm', 'magnitude', '--work-dir',
                      str(tmp_path / 'lb'), '--pretrained', str(pretrained), '--dry-run'])
    lines = [line.split('would run: ', 1)[1] for line in capsys.readouterr().out.splitlines()
             if 'would run: ' in line]
    for seed in (0, 1, 2):
        nm = [c for c in lines if f'seed{seed}/nm_r1 ' in c + ' ']
        assert len(nm) == 1 and leaderboard.NM_CFG in nm[0] and 'custom_hooks.0.rounds=1' in nm[0]
        magnitude = [c for c in lines if f'seed{seed}/magnitude_s50 ' in c + ' ']
        assert len(magnitude) == 1 and 'custom_hooks.0.pruner.prune_ratio=0.5' in magnitude[0]
        for method in ('nm', 'magnitude'):
            for score in ('retrain', 'probe'):
                assert any(f'seed{seed}/scores/{method}_50/{score}' in c for c in lines), \
                    (method, score, seed)
    assert leaderboard.BASELINES['nm'] == 'magnitude'
    cells = {('nm', 'unstructured', 50.0): {'top1': {0: 90.0, 1: 91.0, 2: 92.0}},
             ('magnitude', 'unstructured', 50.0): {'top1': {0: 91.0, 1: 91.0, 2: 91.0}}}
    rows = leaderboard.build_rows(cells, {}, {})
    assert [r['method'] for r in rows] == ['magnitude', 'nm']
    assert '| nm (magnitude) | 91.00 (+0.00 +- 1.00 (1/3)) |' in leaderboard.pivot(rows, 'top1')


def test_imp_taylor_rows_against_imp(tmp_path, capsys):
    """The Taylor-IMP rows: per seed, IMP's loop (its rounds, images and lr) with the Taylor
    config, and IMP's own loop with it (``--methods imp_taylor`` alone gives the paired
    comparison), both tickets scored at every level; the paired difference is against IMP."""
    pretrained = tmp_path / 'dense.pth'
    torch.save({'state_dict': {}}, pretrained)
    leaderboard.main(['--scale', 'smoke', '--methods', 'imp_taylor', '--work-dir',
                      str(tmp_path / 'lb'), '--pretrained', str(pretrained), '--dry-run'])
    lines = [line.split('would run: ', 1)[1] for line in capsys.readouterr().out.splitlines()
             if 'would run: ' in line]
    for seed in (0, 1, 2):
        loops = {}
        for run in ('imp', 'imp_taylor'):
            loops[run], = [c for c in lines if f'seed{seed}/{run} ' in c + ' ']
            assert 'custom_hooks.0.rounds=2' in loops[run]  # the smoke scale's last level
        assert leaderboard.IMP_TAYLOR_CFG in loops['imp_taylor']
        # the same options: only the config (its importance) differs
        assert (loops['imp'].split('--work-dir')[1].replace('/imp ', '/imp_taylor ') ==
                loops['imp_taylor'].split('--work-dir')[1])
        for method in ('imp', 'imp_taylor'):
            for level in ('20', '36'):
                for score in ('retrain', 'probe'):
                    assert any(f'seed{seed}/scores/{method}_{level}/{score}' in c
                               for c in lines), (method, level, score, seed)
    assert Config.fromfile(osp.join(REPO, leaderboard.IMP_TAYLOR_CFG)).custom_hooks[0][
        'pruner']['importance'] == dict(type='mmrecprune.Taylor')
    assert leaderboard.BASELINES['imp_taylor'] == 'imp'
    cells = {('imp_taylor', 'unstructured', 79.0): {'top1': {0: 90.0, 1: 91.0, 2: 92.0}},
             ('imp', 'unstructured', 79.0): {'top1': {0: 91.0, 1: 90.0, 2: 91.0}}}
    rows = leaderboard.build_rows(cells, {}, {})
    assert [r['method'] for r in rows] == ['imp', 'imp_taylor']
    assert '| imp_taylor (imp) | 91.00 (+0.33 +- 1.15 (2/3)) |' in leaderboard.pivot(rows,
                                                                                     'top1')


@pytest.mark.parametrize('bench', ['bench_recprune_vs_imp', 'bench_psap_quality',
                                   'bench_selfsup', 'bench_onthefly', 'bench_mask_divergence'])
def test_each_benchmark_has_a_faithful_scale(bench):
    import subprocess
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'benchmarks', f'{bench}.py'),
                          '--scale', 'faithful', '--help'], capture_output=True, text=True,
                         check=True).stdout
    assert 'faithful:' in out
