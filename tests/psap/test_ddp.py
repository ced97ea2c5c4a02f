"""Under DDP (2 processes, gloo, CPU, tools/dist_train.sh) every rank holds identical channel
masks after every PSAP step, protective restoration included."""
from mmrecprune.tickets import load_ticket
from tests.conftest import dist_train, tiny_dist_config


def test_dist_train_channel_masks_identical_on_every_rank(tmp_path):
    config = tiny_dist_config(
        tmp_path / 'psap_tiny.py', 'configs/psap/psap_r18-w16_fashionmnist.py', """
custom_hooks = [dict(type='StructuredPruningHook', method='psap', target=dict(flops=0.5),
                     num_steps=2, interval=1, protect_factor=1.0,
                     example_input_shape=(1, 3, 32, 32))]
param_scheduler = []
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('channel masks identical on 2 ranks') == 2, log[-3000:]
    meta = load_ticket(str(tmp_path / 'work' / 'tickets' / 'slim.pth')).meta
    assert meta['flops_ratio'] <= 0.5 and meta['steps'] == 2
