"""tools/benchmarks/leaderboard.py: its plan names configs and options that exist, its sizes
refuse values the configs cannot run, and its paired differences are computed per seed.
(The runs themselves are the configs' and tools' own, tested elsewhere; a smoke-scale run takes
~10 minutes and is not part of the suite.)"""
import os.path as osp
import re
import shlex
import sys

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'benchmarks'))
sys.path.insert(0, osp.join(REPO, 'tools'))
import leaderboard  # noqa: E402


def _has_path(cfg, key):
    node = cfg
    for part in key.split('.'):
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


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
            assert _has_path(cfg, key), f'{config}: --cfg-options {key} is not a key of it'
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


@pytest.mark.parametrize('override, match', [
    (['retrain_epochs=1'], 'at least 2 epochs'),
    (['onthefly_epochs=1'], 'at least 2 epochs'),
    (['structured_epochs=3'], 'at least 4 epochs'),
    (['rounds'], 'KEY=VALUE'),
    (['probe_length=3'], 'KEY=VALUE'),
    (['scenes=huge'], 'probe64'),
])
def test_sizes_that_cannot_run_are_refused(override, match):
    with pytest.raises(SystemExit, match=match):
        leaderboard.resolve_scale('default', override)


def test_overrides_keep_types():
    size = leaderboard.resolve_scale('default', ['rounds=7,11', 'lottery_lr=0.003'])
    assert size['rounds'] == [7, 11] and size['lottery_lr'] == 0.003
    assert leaderboard.SCALES['default']['rounds'] == [7, 11, 14]  # the preset is untouched


def test_paired_differences_are_per_seed_and_count_wins():
    cells = {('recprune', 'unstructured', 79.0): {'top1': {0: 80.0, 1: 82.0, 2: 81.0}},
             ('imp', 'unstructured', 79.0): {'top1': {0: 79.0, 1: 83.0, 2: None}},
             ('random', 'unstructured', 79.0): {'top1': {0: 70.0, 1: 71.0, 2: 72.0}}}
    mean, std, n, wins = leaderboard.paired(cells, 'recprune', 'imp', 'unstructured', 79.0,
                                            'top1')
    assert (mean, n, wins) == (0.0, 2, 1)  # seed 2 has no IMP value: not paired
    assert std == pytest.approx(2 ** 0.5)
    rows = leaderboard.build_rows(cells, {}, {})
    assert [r['method'] for r in rows] == ['recprune', 'imp', 'random']
    table = leaderboard.markdown(rows, ['top1'])
    assert '+0.00 +- 1.41 (1/2) vs imp' in table
    assert '81.00 +- 1.00' in table
    assert leaderboard.paired(cells, 'recprune', 'imp', 'unstructured', 91.4, 'top1') is None
    compact = leaderboard.pivot(rows, 'top1')
    assert '| recprune (imp) | 81.00 (+0.00 +- 1.41 (1/2)) |' in compact
    assert '| random (dense) | 71.00 |' in compact  # no dense cell: no paired difference


def test_every_benchmark_scale_sets_defaults_and_explicit_arguments_win():
    """``--scale faithful`` of the benchmarks sets their size arguments; given ones win."""
    import argparse
    from stage_runner import parse_with_scale

    def parser():
        p = argparse.ArgumentParser()
        p.add_argument('--subset', type=int, default=5000)
        p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
        return p
    scales = dict(faithful=dict(subset=60000))
    assert parse_with_scale(parser(), scales, []).subset == 5000
    args = parse_with_scale(parser(), scales, ['--scale', 'faithful'])
    assert (args.subset, args.seeds, args.scale) == (60000, [0, 1, 2], 'faithful')
    assert parse_with_scale(parser(), scales, ['--scale', 'faithful', '--subset', '7']).subset == 7
    with pytest.raises(SystemExit):
        parse_with_scale(parser(), scales, ['--scale', 'huge'])
    with pytest.raises(ValueError, match='subsett'):
        parse_with_scale(parser(), dict(faithful=dict(subsett=60000)), [])


@pytest.mark.parametrize('bench', ['bench_recprune_vs_imp', 'bench_psap_quality',
                                   'bench_selfsup', 'bench_onthefly', 'bench_mask_divergence'])
def test_each_benchmark_has_a_faithful_scale(bench):
    import subprocess
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'benchmarks', f'{bench}.py'),
                          '--scale', 'faithful', '--help'], capture_output=True, text=True,
                         check=True).stdout
    assert 'faithful:' in out


def test_mask_jaccard_against_imp(r18_w16_tickets):
    """The "mask Jaccard vs IMP" column: 1 for the same ticket, the random control's drawn
    masks (the ones PrunedBackbone uses) share far fewer weights, structured rows have none."""
    ticket = r18_w16_tickets['unstructured']
    key = ('unstructured', 20.0, 0)
    entries = {('imp', *key): (ticket, []), ('recprune', *key): (ticket, []),
               ('random', *key): (ticket, ['model.backbone.masks=random']),
               ('onthefly', *key): (ticket, []),  # another network: no Jaccard with IMP's
               ('psap', 'structured', 50.0, 0): (r18_w16_tickets['structured'], [])}
    jaccards = leaderboard.mask_jaccards(entries)
    assert jaccards[('recprune', 'unstructured', 20.0)] == [1.0]
    assert jaccards[('random', 'unstructured', 20.0)][0] < 0.9
    assert set(jaccards) == {('recprune', 'unstructured', 20.0), ('random', 'unstructured', 20.0)}


def test_a_stage_several_tasks_need_runs_once(tmp_path):
    """Tasks on several workers asking for the same stage (e.g. one dense network pruned at
    three levels): it runs once, the others wait for it and reuse it; results.json keeps it."""
    from stage_runner import Pipeline, run_parallel
    marker = tmp_path / 'runs.txt'
    out = tmp_path / 'out.txt'
    cmd = [sys.executable, '-c', 'import time; time.sleep(1); '
           f'open({str(marker)!r}, "a").write("x"); open({str(out)!r}, "w").write("done")']
    pipe = Pipeline(str(tmp_path / 'work'))
    records = run_parallel([lambda: pipe.run('dense', [cmd], [str(out)])] * 3, 3)
    assert marker.read_text() == 'x'
    assert all(r['wall_s'] == records[0]['wall_s'] for r in records)
    assert Pipeline(str(tmp_path / 'work')).run('dense', [cmd], [str(out)]) == records[0]
    assert marker.read_text() == 'x'
