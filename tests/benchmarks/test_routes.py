"""bench_routes.py: its plan (configs that exist, config options that exist in them), the
level conversion it gives routes (b) and (c), and its report."""
import argparse
import os.path as osp
import shlex

import pytest
import torch
from mmengine.config import Config

from mmrecprune.benchmarks import routes, routes_report
from tests.conftest import config_has_key

# the stages of this benchmark's own routes (the leaderboard's stages are its tests' concern)
OWN_STAGES = ('dense/', 'intask/', 'posttrain/', 'posttrain_ft/')


def planned_commands(tmp_path, capsys):
    routes.main(['--dry-run', '--work-dir', str(tmp_path / 'routes'), '--leaderboard-dir',
                 str(tmp_path / 'no_leaderboard'), '--seeds', '0', '--flops', '0.75'])
    out = capsys.readouterr().out
    plan = []
    for line in out.splitlines():
        stage, sep, cmd = line.partition('] would run: ')
        if sep:
            plan.append((stage.lstrip('['), shlex.split(cmd)))
    return plan


def test_plan_names_configs_and_options_that_exist(tmp_path, capsys):
    plan = planned_commands(tmp_path, capsys)
    stages = {stage.split('/')[0] for stage, _ in plan}
    assert {'dense', 'intask', 'posttrain', 'posttrain_ft', 'prune', 'det_finetuned',
            'seg_finetuned'} <= stages
    work = str(tmp_path)
    checked = 0
    for stage, cmd in plan:
        if cmd[1] not in ('tools/train.py', 'tools/test.py', 'tools/prune_post_training.py'):
            continue  # the scenes data
        config = cmd[2]
        if config.startswith(work):  # written by an earlier stage (a slim model's config)
            assert stage.startswith(('intask/', 'posttrain_ft/')), (stage, config)
            # (c) + fine-tune trains the written copy of the dense probe config
            config = routes.TASKS[stage.split('/')[1]]['dense_cfg']
        assert osp.isfile(config), (stage, config)
        if not stage.startswith(OWN_STAGES) or '--cfg-options' not in cmd:
            continue
        cfg = Config.fromfile(config).to_dict()
        for option in cmd[cmd.index('--cfg-options') + 1:]:
            key = option.partition('=')[0]
            assert config_has_key(cfg, key), f'{stage}: {key} is not a key of {config}'
            checked += 1
    assert checked > 10


def test_probe_fraction_is_reachable_at_the_probe_input():
    """(b) and (c) get the 64x64 fraction of the widths that remove 75 % at 56x56: a little
    less, and one that L1-uniform reaches on the probe detector (75 % at 64x64 is not)."""
    from mmrecprune.methods import L1UniformPruner
    fraction = routes.probe_fraction(0.75)
    assert 0.70 < fraction < 0.75
    model = routes_report.build_model(routes.TASKS['det']['dense_cfg'])
    example = torch.zeros(1, 3, routes.PROBE_INPUT, routes.PROBE_INPUT)
    L1UniformPruner(target=dict(flops=fraction), num_steps=3).attach(model, example)
    with pytest.raises(ValueError, match='empty the layer'):
        L1UniformPruner(target=dict(flops=0.75), num_steps=3).attach(model, example)


def test_report_pairs_seeds_and_costs(tmp_path):
    cells = {('a_l1', 'det', 75.0, 0): (10.0, 600.0), ('a_l1', 'det', 75.0, 1): (12.0, 600.0),
             ('b_l1', 'det', 75.0, 0): (11.0, 300.0), ('b_l1', 'det', 75.0, 1): (13.5, 300.0),
             ('dense', 'det', 0.0, 0): (15.0, 400.0), ('dense', 'det', 0.0, 1): (16.0, 400.0),
             ('c', 'det', 75.0, 0): (1.0, 60.0)}
    speed = dict(speedup={'det|75|b_l1': dict(value=1.25)}, load_average=[3.0, 3.0, 3.0])
    rows = {r['route']: r for r in routes_report.build_rows(cells, [75.0], speed)}
    assert set(rows) == {'a_l1', 'b_l1', 'c'}
    mean, _, n, wins = rows['b_l1']['det_vs_ref']
    assert (mean, n, wins) == (pytest.approx(1.25), 2, 2)
    assert rows['b_l1']['det_cost'][0] == pytest.approx(0.5)
    assert rows['b_l1']['det_cost_dense'][0] == pytest.approx(700 / 600)
    assert rows['a_l1']['det_cost_dense'][0] == pytest.approx(1.0)
    assert rows['b_l1']['det_speedup'] == 1.25 and rows['c']['det_speedup'] is None
    assert rows['c']['det_vs_ref'][2] == 1  # one seed paired
    args = argparse.Namespace(work_dir=str(tmp_path), flops=[0.75], seeds=[0, 1, 2])
    routes_report.write_report(args, cells, speed, 1.0)
    table = (tmp_path / 'routes.md').read_text()
    assert '| (b) in-task L1-uniform | -75 % | 12.25 +- 1.77 | +1.25 +- 0.35 (2/2) |' in table
    assert (tmp_path / 'routes.png').is_file() and (tmp_path / 'routes.json').is_file()
