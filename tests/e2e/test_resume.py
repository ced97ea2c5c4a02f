"""Checkpoints written by MMEngine load on PyTorch >= 2.6 and resume continues exactly."""
import pickle

import pytest
import torch
from mmengine.runner import Runner

from tests.conftest import tiny_cls_cfg


def _run(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _optimizer_state(runner):
    return {k: v['momentum_buffer'].clone()
            for k, v in runner.optim_wrapper.optimizer.state_dict()['state'].items()}


def test_resume_continues_exactly(tmp_path):
    full = _run(tiny_cls_cfg(tmp_path / 'full', max_epochs=2))

    first = tiny_cls_cfg(tmp_path / 'split', max_epochs=1)
    _run(first)
    second = tiny_cls_cfg(tmp_path / 'split', max_epochs=2)
    second.resume = True
    resumed = _run(second)

    assert resumed.iter == full.iter == 8
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for k, v in _optimizer_state(full).items():
        torch.testing.assert_close(v, _optimizer_state(resumed)[k], rtol=0, atol=0)


def test_checkpoint_loads_weights_only(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    _run(tiny_cls_cfg(tmp_path, max_epochs=1))
    ckpt = _load_checkpoint(str(tmp_path / 'epoch_1.pth'))
    assert ckpt['meta']['epoch'] == 1
    assert 'message_hub' in ckpt
    # the allow-list is scoped to MMEngine's loader: plain torch.load keeps PyTorch's defaults
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'epoch_1.pth')


class _Evil:
    def __reduce__(self):
        return (print, ('executed',))


def test_untrusted_pickle_is_still_refused(tmp_path, capsys):
    from mmengine.runner.checkpoint import _load_checkpoint
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path))
    assert 'executed' not in capsys.readouterr().out
