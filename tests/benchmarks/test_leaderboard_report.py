"""``--report-only`` over a finished leaderboard run writes the tables the leaderboard wrote
before it became a package (``tools/benchmarks/leaderboard.py`` of commit 2ab548d): the
fixtures in ``fixtures/`` are that code's ``leaderboard.md`` and ``leaderboard.json`` for the
run :func:`tests.benchmarks.finished_run.make_finished_run` builds (the CPU speed-up, a
timing, and the wall time are fixed here as they were there)."""
import json
import os
import os.path as osp
import subprocess
import sys
import types

import pytest

from mmrecprune import analysis
from mmrecprune.benchmarks import leaderboard
from tests.benchmarks.finished_run import make_finished_run
from tests.conftest import REPO

FIXTURES = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures')


@pytest.fixture
def finished_run(tmp_path, r18_w16_tickets):
    return make_finished_run(str(tmp_path), r18_w16_tickets)


def _read(path, mode='r'):
    with open(path, mode) as f:
        return f.read()


def test_report_only_reproduces_the_tables_byte_for_byte(finished_run, monkeypatch, capsys):
    monkeypatch.setattr(analysis, 'latency_ratio', lambda ticket, repeats, batch=8: 1.25)
    monkeypatch.setattr(leaderboard, 'time', types.SimpleNamespace(time=lambda: 0.0))
    leaderboard.main(finished_run)
    work = finished_run[finished_run.index('--work-dir') + 1]
    expected = _read(osp.join(FIXTURES, 'leaderboard_report_expected.md'), 'rb')
    assert _read(osp.join(work, 'leaderboard.md'), 'rb') == expected
    assert _read(osp.join(work, 'leaderboard.json'), 'rb') == _read(
        osp.join(FIXTURES, 'leaderboard_report_expected.json'), 'rb')
    assert expected.decode().rstrip('\n') in capsys.readouterr().out  # printed as written
    assert osp.isfile(osp.join(work, 'leaderboard.png'))
    summary = json.loads(_read(osp.join(work, 'leaderboard.json')))
    assert {r['method'] for r in summary['rows']} == {
        'dense', 'recprune', 'imp', 'random', 'magnitude', 'nm', 'psap', 'l1_uniform'}


def test_report_only_from_the_command_line(finished_run):
    """The entry point runs the same code: the same tables but for the measured CPU speed-up
    and wall time."""
    subprocess.run([sys.executable, 'tools/benchmarks/leaderboard.py', *finished_run],
                   cwd=REPO, check=True, capture_output=True,
                   env=dict(os.environ, OMP_NUM_THREADS='1'))
    work = finished_run[finished_run.index('--work-dir') + 1]
    got = _read(osp.join(work, 'leaderboard.md')).splitlines()
    expected = _read(osp.join(FIXTURES, 'leaderboard_report_expected.md')).splitlines()
    assert len(got) == len(expected)
    for line, want in zip(got, expected):
        if 'x |' in want or 'Wall time' in want:  # the timed CPU speed-up; the wall time
            continue
        assert line == want


def test_report_only_leaves_out_methods_that_never_ran(finished_run, monkeypatch):
    """Every method (the default ``--methods``, e.g. ``imp_taylor``, which this run never ran)
    over the same run: the same tables, no empty rows for the others."""
    monkeypatch.setattr(analysis, 'latency_ratio', lambda ticket, repeats, batch=8: 1.25)
    monkeypatch.setattr(leaderboard, 'time', types.SimpleNamespace(time=lambda: 0.0))
    start, end = finished_run.index('--methods'), finished_run.index('--scenes-levels')
    leaderboard.main(finished_run[:start] + finished_run[end:])
    work = finished_run[finished_run.index('--work-dir') + 1]
    assert _read(osp.join(work, 'leaderboard.md'), 'rb') == _read(
        osp.join(FIXTURES, 'leaderboard_report_expected.md'), 'rb')
