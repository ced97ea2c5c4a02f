"""Under DDP (2 processes, gloo, CPU, tools/dist_train.sh) every rank holds identical masks."""

from mmrecprune.tickets import load_ticket
from tests.conftest import REPO, dist_train


def test_dist_train_masks_identical_on_every_rank(tmp_path):
    config = tmp_path / 'imp_tiny.py'
    config.write_text(f"""
_base_ = '{REPO}/configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'
model = dict(backbone=dict(base_channels=8), in_channels=64)
_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=8, dataset=dict(indices=64, pipeline=_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(indices=32, pipeline=_pipeline))
test_dataloader = val_dataloader
rounds = 2
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1, method='imp')]
train_cfg = dict(max_epochs=2, val_interval=2)
load_from = None
default_hooks = dict(logger=dict(interval=1))
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('masks identical on 2 ranks') == 2, log[-3000:]
    ticket = load_ticket(str(tmp_path / 'work' / 'tickets' / 'round_2.pth'))
    assert abs(ticket.meta['sparsity'] - 0.36) < 1e-3
