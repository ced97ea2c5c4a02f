"""The stage runner of the benchmarks and the main job: ``--scale`` presets, and a stage
several workers need runs once."""
import argparse
import sys

import pytest

from mmrecprune.benchmarks.stage_runner import Pipeline, parse_with_scale, run_parallel


def test_every_benchmark_scale_sets_defaults_and_explicit_arguments_win():
    """``--scale faithful`` of the benchmarks sets their size arguments; given ones win."""

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


def test_a_stage_several_tasks_need_runs_once(tmp_path):
    """Tasks on several workers asking for the same stage (e.g. one dense network pruned at
    three levels): it runs once, the others wait for it and reuse it; results.json keeps it."""
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
