"""The leaderboard's library (mmrecprune/benchmarks/leaderboard/): its sizes refuse values the
configs cannot run, its paired differences are computed per seed, and its mask overlap with IMP
is that of the masks each row's backbone uses. (Its plan: tests/e2e/test_leaderboard.py; its
tables against the pre-package code: test_leaderboard_report.py.)"""
import pytest

from mmrecprune.benchmarks import leaderboard


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


def test_mask_jaccard_against_imp(r18_w16_tickets):
    """The "mask Jaccard vs IMP" column: 1 for the same ticket, the random control's drawn
    masks (the ones PrunedBackbone uses) share far fewer weights, structured rows have none."""
    ticket = r18_w16_tickets['unstructured']
    key = ('unstructured', 20.0, 0)
    entries = {('imp', *key): (ticket, []), ('recprune', *key): (ticket, []),
               ('imp_taylor', *key): (ticket, []),  # pruned from IMP's dense network too
               ('random', *key): (ticket, ['model.backbone.masks=random']),
               ('onthefly', *key): (ticket, []),  # another network: no Jaccard with IMP's
               ('psap', 'structured', 50.0, 0): (r18_w16_tickets['structured'], [])}
    jaccards = leaderboard.mask_jaccards(entries)
    assert jaccards[('recprune', 'unstructured', 20.0)] == [1.0]
    assert jaccards[('random', 'unstructured', 20.0)][0] < 0.9
    assert set(jaccards) == {('recprune', 'unstructured', 20.0), ('random', 'unstructured', 20.0),
                             ('imp_taylor', 'unstructured', 20.0)}


def test_pooled_recprune_runs_its_own_decoder_and_loop_on_the_pooled_target(tmp_path, capsys):
    """``--methods recprune recprune_pooled``: the variant trains its own decoder and runs the
    RecPrune loop with ``model.rec_downsample=2``, both in work dirs of its own, and is paired
    with RecPrune; it is not in the default grid."""
    from mmrecprune.benchmarks.stage_runner import Pipeline
    assert 'recprune_pooled' not in leaderboard.parse_args([]).methods
    args = leaderboard.parse_args(['--work-dir', str(tmp_path), '--methods', 'recprune',
                                   'recprune_pooled', '--dry-run', '--seeds', '0'])
    pipe = Pipeline(args.work_dir, dry_run=True)
    tasks, entries = leaderboard.ticket_tasks(pipe, args, 0)
    for task in tasks:
        task()
    lines = capsys.readouterr().out.splitlines()
    runs = {line.split(']')[0][1:]: line for line in lines if 'would run' in line}
    assert set(runs) == {'decoder/seed0', 'prune/recprune/seed0', 'decoder_pooled/seed0',
                         'prune/recprune_pooled/seed0'}
    for name, line in runs.items():
        assert ('model.rec_downsample=2' in line) == ('pooled' in name), name
    assert 'decoder_pooled/epoch_3.pth' in runs['prune/recprune_pooled/seed0']
    level = ('unstructured', leaderboard.level_key('unstructured', 14), 0)
    assert entries[('recprune_pooled', *level)][0].endswith('recprune_pooled/tickets/round_14.pth')
    assert leaderboard.BASELINES['recprune_pooled'] == 'recprune'
