"""The stage runner of the benchmarks and the main job: ``--scale`` presets, and a stage
several workers need runs once."""
import argparse
import subprocess
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


def test_labelled_output_prefixes_every_line_with_the_stage(tmp_path, capfd):
    """Two stages side by side (the main job's lanes) print their logs with the stage's name,
    stdout and stderr alike; a failing stage still raises with its exit status."""
    pipe = Pipeline(str(tmp_path / 'work'), label_output=True)
    out = tmp_path / 'out.txt'
    cmd = [sys.executable, '-c', 'import sys; print("one"); print("two", file=sys.stderr); '
           f'open({str(out)!r}, "w").write("x")']
    pipe.run('det_dense', [cmd], [str(out)])
    lines = capfd.readouterr().out.splitlines()
    assert '[det_dense] one' in lines and '[det_dense] two' in lines
    with pytest.raises(subprocess.CalledProcessError) as err:
        pipe.run('broken', [[sys.executable, '-c', 'raise SystemExit(3)']], [])
    assert err.value.returncode == 3


def test_a_failed_stage_is_not_run_again_by_the_task_waiting_for_it(tmp_path):
    """A task that needs a stage another task is running waits for it; when that stage
    fails, the waiting task stops with a message naming it instead of running it again."""
    marker = tmp_path / 'runs.txt'
    cmd = [sys.executable, '-c', 'import time; time.sleep(1); '
           f'open({str(marker)!r}, "a").write("x"); raise SystemExit(1)']
    pipe = Pipeline(str(tmp_path / 'work'))
    with pytest.raises((subprocess.CalledProcessError, RuntimeError)):
        run_parallel([lambda: pipe.run('pretrain', [cmd], [])] * 2, 2)
    assert marker.read_text() == 'x'
    with pytest.raises(RuntimeError, match="stage 'pretrain' failed"):
        pipe.run('pretrain', [cmd], [])


def test_force_reruns_a_finished_stage_once_per_invocation(tmp_path):
    """``--force`` ignores what earlier invocations finished, but a stage that this one ran
    is reused by the next task that needs it (the main job's lanes share pretraining)."""
    marker = tmp_path / 'runs.txt'
    out = tmp_path / 'out.txt'
    cmd = [sys.executable, '-c', f'open({str(marker)!r}, "a").write("x"); '
           f'open({str(out)!r}, "w").write("done")']
    Pipeline(str(tmp_path / 'work')).run('pretrain', [cmd], [str(out)])
    forced = Pipeline(str(tmp_path / 'work'), force=True)
    forced.run('pretrain', [cmd], [str(out)])
    forced.run('pretrain', [cmd], [str(out)])
    assert marker.read_text() == 'xx'
