"""An on-the-fly ticket (pruned entries hold non-zero mean values, ticket format v2) fine-tuned
through a real MMEngine runner with the shipped downstream configs (plain ``OptimWrapper``):
every checkpoint the runner saves, after any number of iterations, holds the fill values
exactly at the pruned positions. The checkpoint hook saves right after an optimizer step,
before the next forward, so this is where fills that are put back only before a forward
would show the drift weight decay / momentum / Adam give them."""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.fileio import load_mmengine_checkpoint
from mmrecprune.tickets import load_ticket
from tests.conftest import repo_path, shrink_downstream_cfg

pytestmark = pytest.mark.usefixtures('single_thread')
DET = 'configs/downstream/mmdet/retinanet_mobilenetv2-w0.5-ticket_fpn_probe_fashionscenes64.py'
SEG = 'configs/downstream/mmseg/fpn_mobilenetv2-w0.5-ticket_probe_fashionscenes64.py'
ADAMW = dict(type='AdamW', lr=1e-3, weight_decay=0.05)


@pytest.mark.parametrize('config, optimizer', [(DET, None), (SEG, None), (SEG, ADAMW)],
                         ids=['detector-sgd', 'segmenter-sgd', 'segmenter-adamw'])
def test_every_saved_checkpoint_holds_the_fills_exactly(config, optimizer, tmp_path, scenes,
                                                         mbv2_ticket):
    cfg = shrink_downstream_cfg(Config.fromfile(repo_path(config)), tmp_path, scenes,
                                mbv2_ticket)
    if optimizer:
        cfg.optim_wrapper.optimizer = optimizer
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=-1)  # keep every save
    if 'max_epochs' in cfg.train_cfg:  # detector: 2 epochs of 2 iterations, a save per epoch
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = 2
        saved = ['epoch_1.pth', 'epoch_2.pth']
    else:  # segmenter: a save after each of 3 iterations
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 3
        cfg.model.data_preprocessor.size = (64, 64)
        saved = ['iter_1.pth', 'iter_2.pth', 'iter_3.pth']
    Runner.from_cfg(cfg).train()

    ticket = load_ticket(mbv2_ticket)
    assert ticket.fill_values and all(f.abs().max() > 0 for f in ticket.fill_values.values())
    for filename in saved:
        state = load_mmengine_checkpoint(str(tmp_path / filename))['state_dict']
        trained = 0
        for name, mask in ticket.masks.items():
            weight = state['backbone.' + name]
            fill = torch.broadcast_to(ticket.fill_values[name], mask.shape)
            assert torch.equal(weight[~mask], fill[~mask]), (
                f'{filename}: {name} pruned entries off their fill by '
                f'{(weight[~mask] - fill[~mask]).abs().max():.3g}')
            trained += int((weight[mask] != ticket.state_dict[name][mask]).sum())
        assert trained > 0, filename  # the kept entries did train
