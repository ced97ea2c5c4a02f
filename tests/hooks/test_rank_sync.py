"""The one DDP path (``mmrecprune.hooks.rank_sync``) through both hooks: under DDP (2 processes,
gloo, CPU, ``tools/dist_train.sh``) every rank holds rank 0's masks and identical weights."""

import pytest

from mmrecprune.ops import mask_functions, onthefly_functions
from mmrecprune.tickets import load_ticket
from tests.conftest import dist_train, kernels_or_skip, tiny_dist_config


@pytest.mark.parametrize('compiled_ops', [False, True], ids=['eager', 'compiled_ops'])
def test_dist_train_masks_identical_on_every_rank(tmp_path, compiled_ops):
    """With ``compiled_ops``, both ranks enforce and select the masks with the compiled mask
    kernels (built here first, so that the ranks load the cached build)."""
    if compiled_ops:
        kernels_or_skip(mask_functions)
    pruner = ("pruner=dict(type='IterativeMagnitudePruner', method='imp', compiled_ops=True)"
              if compiled_ops else "method='imp'")
    config = tiny_dist_config(
        tmp_path / 'imp_tiny.py', 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', f"""
rounds = 2
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1, {pruner})]
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('masks identical on 2 ranks (weights too)') == 2, log[-3000:]
    ticket = load_ticket(str(tmp_path / 'work' / 'tickets' / 'round_2.pth'))
    assert abs(ticket.meta['sparsity'] - 0.36) < 1e-3


def test_ranks_take_rank0_masks_and_weights_when_their_plans_differ(tmp_path):
    """Rank 1's weights are perturbed just before the round ends, so its own magnitude plan
    differs. Rank 0's masks must win *before* rewinding: afterwards both ranks hold the same
    masks and the same weights (before the fix, rank 1 rewound with its own masks and kept
    other weights while the mask check still passed)."""
    config = tiny_dist_config(
        tmp_path / 'imp_diverging.py', 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', """
custom_imports = dict(imports=['mmrecprune', 'tests.hooks.ddp_probe'],
                      allow_failed_imports=False)
rounds = 1
train_cfg = dict(max_epochs=1, val_interval=1)
custom_hooks = [dict(type='LotteryTicketHook', rounds=1, epochs_per_round=1, method='imp'),
                dict(type='DivergingRankProbeHook')]
""")
    log = dist_train(config, tmp_path / 'work')
    assert 'masks identical on 2 ranks (weights too)' in log, log[-3000:]
    # every rank compares all ranks' digests; rank 0's report reaches the log
    assert 'probe: weights identical on 2 ranks' in log, log[-3000:]
    assert 'probe: weights DIFFER' not in log


def test_dist_train_channel_masks_identical_on_every_rank(tmp_path):
    config = tiny_dist_config(
        tmp_path / 'psap_tiny.py', 'configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py', """
custom_hooks = [dict(type='StructuredPruningHook', interval=1, example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=2,
                                 protect_factor=1.0))]
param_scheduler = []
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('channel masks identical on 2 ranks') == 2, log[-3000:]
    meta = load_ticket(str(tmp_path / 'work' / 'tickets' / 'slim.pth')).meta
    assert meta['flops_ratio'] <= 0.5 and meta['step'] == 2


@pytest.mark.parametrize('compiled_ops', [False, True], ids=['eager', 'compiled_ops'])
def test_dist_train_on_the_fly_cut_identical_on_every_rank(tmp_path, compiled_ops):
    """On-the-fly pruning under DDP: the penalty trains on both ranks, rank 0 decides the cut,
    both ranks hold its masks, fill values and weights; the validation scores gather over
    both ranks' shards. With ``compiled_ops``, both ranks compute it with the compiled kernels
    (built here first, so that the ranks load the cached build)."""
    if compiled_ops:
        kernels_or_skip(onthefly_functions)
    config = tiny_dist_config(
        tmp_path / 'onthefly_tiny.py',
        'configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py', f"""
custom_hooks = [dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='OnTheFlyPruner', sparsity=0.5, warmup_iters=2,
                                 compiled_ops={compiled_ops}))]
param_scheduler = []
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('masks identical on 2 ranks (weights too)') == 1, log[-3000:]
    assert 'filter_abs_signed: accuracy/top1' in log
    ticket = load_ticket(str(tmp_path / 'work' / 'tickets' / 'onthefly_p50.pth'))
    assert abs(ticket.meta['sparsity'] - 0.5) < 0.01 and ticket.fill_values
