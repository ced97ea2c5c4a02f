"""What pruning reports reaches MMEngine's visualizer backends (TensorBoard and friends): read
back from LocalVisBackend's scalars file of real runs."""
import glob
import json

import pytest
from mmengine.runner import Runner

from tests.conftest import tiny_cls_cfg


def _scalars(work_dir):
    files = glob.glob(f'{work_dir}/*/vis_data/scalars.json')
    assert len(files) == 1, files
    with open(files[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def _keys(records):
    return {k for r in records for k in r}


@pytest.mark.parametrize('config, hook_update, expected', [
    ('configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', dict(rounds=2, epochs_per_round=1),
     ['pruning/sparsity', 'pruning/layer_sparsity/backbone.layer1.0.conv1.weight', 'sparsity']),
    ('configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py',
     dict(example_input_shape=(1, 3, 32, 32), pruner=dict(type='PSAPPruner', num_steps=2)),
     ['pruning/flops_kept', 'pruning/params_kept', 'pruning/channels_kept', 'pruning/restored',
      'pruning/group_kept/backbone.layer1.0.conv1', 'flops_kept']),
])
def test_pruning_scalars_reach_the_visualizer(tmp_path, config, hook_update, expected):
    cfg = tiny_cls_cfg(tmp_path, config=config, max_epochs=2)
    cfg.load_from = None
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    cfg.custom_hooks[0].update(hook_update)
    # MMEngine keeps one Visualizer per experiment name (config name + start second): a runner
    # of the same config started in the same second of this process would write to the
    # earlier run's folder
    cfg.experiment_name = tmp_path.name
    Runner.from_cfg(cfg).train()
    records = _scalars(tmp_path)
    keys = _keys(records)
    for key in expected:
        assert key in keys, (key, sorted(keys)[:20])
    values = [r['pruning/sparsity'] for r in records if 'pruning/sparsity' in r] or \
        [r['pruning/flops_kept'] for r in records if 'pruning/flops_kept' in r]
    assert values and all(0.0 <= v <= 1.0 for v in values)
