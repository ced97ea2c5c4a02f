"""Under DDP (2 processes, gloo, CPU, tools/dist_train.sh) every rank holds identical channel
masks after every PSAP step, protective restoration included."""
from mmrecprune.tickets import load_ticket
from tests.conftest import REPO, dist_train


def test_dist_train_channel_masks_identical_on_every_rank(tmp_path):
    config = tmp_path / 'psap_tiny.py'
    config.write_text(f"""
_base_ = '{REPO}/configs/psap/psap_r18-w16_fashionmnist.py'
model = dict(backbone=dict(base_channels=8), in_channels=64)
_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=8, dataset=dict(indices=64, pipeline=_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(indices=32, pipeline=_pipeline))
test_dataloader = val_dataloader
custom_hooks = [dict(type='StructuredPruningHook', method='psap', target=dict(flops=0.5),
                     num_steps=2, interval=1, protect_factor=1.0,
                     example_input_shape=(1, 3, 32, 32))]
param_scheduler = []
train_cfg = dict(max_epochs=2, val_interval=2)
load_from = None
default_hooks = dict(logger=dict(interval=1))
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('channel masks identical on 2 ranks') == 2, log[-3000:]
    meta = load_ticket(str(tmp_path / 'work' / 'tickets' / 'slim.pth')).meta
    assert meta['flops_ratio'] <= 0.5 and meta['steps'] == 2
