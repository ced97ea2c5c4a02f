"""Under DDP (2 processes, gloo, CPU, tools/dist_train.sh) every rank holds identical masks."""

from mmrecprune.tickets import load_ticket
from tests.conftest import dist_train, tiny_dist_config


def test_dist_train_masks_identical_on_every_rank(tmp_path):
    config = tiny_dist_config(
        tmp_path / 'imp_tiny.py', 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', """
rounds = 2
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1, method='imp')]
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('masks identical on 2 ranks') == 2, log[-3000:]
    ticket = load_ticket(str(tmp_path / 'work' / 'tickets' / 'round_2.pth'))
    assert abs(ticket.meta['sparsity'] - 0.36) < 1e-3
