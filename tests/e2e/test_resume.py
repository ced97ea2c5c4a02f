"""Checkpoints load as data and resume continues exactly: as MMEngine writes them (message hub
pickled), and as plain data (``PlainCheckpointHook``, what ``tools/train.py`` adds), which
plain ``torch.load(weights_only=True)`` reads with nothing allow-listed."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from mmengine.utils import digit_version

from mmrecprune.fileio import read_plain
from mmrecprune.hooks import with_plain_checkpoints
from tests.conftest import tiny_cls_cfg


def _run(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _optimizer_state(runner):
    return {k: v['momentum_buffer'].clone()
            for k, v in runner.optim_wrapper.optimizer.state_dict()['state'].items()}


def _cfg(work_dir, plain, **kwargs):
    cfg = tiny_cls_cfg(work_dir, **kwargs)
    # a step schedule, as mmdet's configs use: MultiStepLR saves its milestones as a Counter
    cfg.param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[1], gamma=0.5,
                                begin=0, end=2)]
    return with_plain_checkpoints(cfg) if plain else cfg


@pytest.mark.parametrize('plain', [False, True], ids=['mmengine', 'plain'])
def test_resume_continues_exactly(tmp_path, plain):
    full = _run(_cfg(tmp_path / 'full', plain, max_epochs=2))

    _run(_cfg(tmp_path / 'split', plain, max_epochs=1))
    second = _cfg(tmp_path / 'split', plain, max_epochs=2)
    second.resume = True
    resumed = _run(second)

    assert resumed.iter == full.iter == 8
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for k, v in _optimizer_state(full).items():
        torch.testing.assert_close(v, _optimizer_state(resumed)[k], rtol=0, atol=0)
    assert resumed.optim_wrapper.get_lr() == full.optim_wrapper.get_lr()
    # the resumed message hub holds real HistoryBuffers
    assert type(resumed.message_hub.get_scalar('train/loss')) is HistoryBuffer


@pytest.mark.skipif(digit_version(torch.__version__) < digit_version('2.4.0'),
                    reason='torch.load(weights_only=True) reads collections.Counter (the '
                           "MultiStepLR milestones a plain checkpoint holds) from torch 2.4")
def test_plain_checkpoints_need_no_allow_list(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmrecprune.fileio import load_mmengine_checkpoint, plain_checkpoint
    _run(_cfg(tmp_path / 'plain', True, max_epochs=1))
    _run(_cfg(tmp_path / 'mmengine', False, max_epochs=1))
    plain = torch.load(tmp_path / 'plain' / 'epoch_1.pth', weights_only=True)
    assert plain['meta']['epoch'] == 1
    history = plain['message_hub']['log_scalars']['train/loss']
    assert set(history) == {'log_history', 'count_history', 'max_length'}
    native = str(tmp_path / 'mmengine' / 'epoch_1.pth')
    with pytest.raises(pickle.UnpicklingError):  # MMEngine's own format needs our loader
        torch.load(native, weights_only=True)
    # the same checkpoint in both forms reads into the same HistoryBuffers
    converted = tmp_path / 'converted.pth'
    torch.save(plain_checkpoint(load_mmengine_checkpoint(native)), converted)
    a = _load_checkpoint(str(converted))['message_hub']['log_scalars']
    b = _load_checkpoint(native)['message_hub']['log_scalars']
    assert set(a) == set(b)
    for key, buf in b.items():
        assert type(a[key]) is HistoryBuffer and a[key].max_length == buf.max_length
        np.testing.assert_array_equal(a[key].data[0], buf.data[0])
        np.testing.assert_array_equal(a[key].data[1], buf.data[1])


def test_resume_from_a_mid_epoch_checkpoint(tmp_path):
    """A checkpoint saved by iteration in the middle of an epoch loads and the run goes on
    (MMEngine's epoch loop replays the interrupted epoch from its start: 2 + 8 iterations)."""
    cfg = _cfg(tmp_path, True, max_epochs=2)
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=2)
    _run(cfg)
    # the project's reader: plain torch.load of the milestones' Counter needs torch >= 2.4
    assert read_plain(str(tmp_path / 'iter_2.pth'))['meta']['iter'] == 2
    resumed = _cfg(tmp_path, True, max_epochs=2)
    resumed.load_from, resumed.resume = str(tmp_path / 'iter_2.pth'), True
    runner = _run(resumed)
    assert runner.iter == 2 + 8


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
