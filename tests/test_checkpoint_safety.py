"""A crafted checkpoint runs nothing on any path that loads one (issue: getattr chains and a
BUILD-planted ``__setstate__`` got through the old allow-list).

The payloads are real pickle opcodes hidden as one extra key in a real MMEngine checkpoint
(``epoch_1.pth`` of a tiny training run) or in a real ticket. Each would write a marker file
if any of its code ran.
"""
import os.path as osp
import pickle
import struct
import subprocess
import sys
import types

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

from mmrecprune.fileio import UnsafeCheckpointError, load_mmengine_checkpoint
from tests.conftest import REPO, tiny_cls_cfg

pytestmark = pytest.mark.usefixtures('single_thread')


# -- writing raw opcodes into a torch.save archive ------------------------------------------
class RawPickle:
    """Bytes written verbatim into the pickle stream where this object stands."""

    def __init__(self, data):
        self.data = data


class _RawPickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch we can extend
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[RawPickle] = lambda self, obj: self.write(obj.data)


RAW_PICKLE_MODULE = types.SimpleNamespace(__name__='raw_pickle', Pickler=_RawPickler)


def _str(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data  # BINUNICODE


def _global(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'  # GLOBAL


def _call(func, *args):
    assert len(args) == 2
    return func + args[0] + args[1] + b'\x86R'  # TUPLE2, REDUCE


GETATTR = _global('builtins', 'getattr')
HISTORY_BUFFER = _global('mmengine.logging.history_buffer', 'HistoryBuffer')
NEW_HISTORY_BUFFER = HISTORY_BUFFER + b')\x81'  # EMPTY_TUPLE, NEWOBJ
BUILTINS_MODULE = _call(GETATTR, GETATTR, _str('__self__'))  # getattr(getattr, '__self__')
EXEC = _call(GETATTR, BUILTINS_MODULE, _str('exec'))


def _planted_setstate(value, argument):
    """A HistoryBuffer whose first BUILD plants ``__setstate__ = value`` and whose second
    BUILD then calls it with ``argument``."""
    return (NEW_HISTORY_BUFFER + b'}' + _str('__setstate__') + value + b's' + b'b'
            + argument + b'b')


def payloads(marker):
    code = _str(f'open({str(marker)!r}, "w").write("ran")')
    reconstruct = _global('numpy._core.multiarray', '_reconstruct')
    return {
        'exec through getattr chain and planted __setstate__': _planted_setstate(EXEC, code),
        'getattr chain to the builtins module': BUILTINS_MODULE,
        'getattr on a builtin': _call(GETATTR, _global('builtins', 'print'), _str('__call__')),
        'planted __setstate__ from an allowed statistic': _planted_setstate(
            _call(GETATTR, HISTORY_BUFFER, _str('mean')), b'}'),
        'class-wide statistics_methods replaced': (
            NEW_HISTORY_BUFFER + b'}' + _str('statistics_methods') + b'}' + _str('mean')
            + reconstruct + b's' + b's' + b'b'),
        'second BUILD after a valid one': (
            NEW_HISTORY_BUFFER + b'}' + _str('max_length') + b'K\x05' + b's' + b'b'
            + b'}' + _str('max_length') + b'K\x06' + b's' + b'b'),
        'history that is not a numeric array': (
            NEW_HISTORY_BUFFER + b'}' + _str('_log_history') + _str('text') + b's' + b'b'),
    }


PAYLOAD_NAMES = list(payloads('x'))


def write_with_payload(src_obj, path, payload):
    obj = dict(src_obj, payload=RawPickle(payload))
    torch.save(obj, path, pickle_module=RAW_PICKLE_MODULE)
    return str(path)


def assert_refused_cleanly(err, marker):
    message = str(err.value)
    assert 'Nothing in the file was executed' in message or 'nothing was executed' in message
    assert 'weights_only=False' not in message.replace(' ', '')
    assert 'weights_only` set to `False' not in message
    assert not osp.exists(marker), 'the payload ran'


@pytest.fixture
def real_checkpoint(training_checkpoint):
    return training_checkpoint


def test_opcode_writer_makes_loadable_checkpoints(tmp_path, real_checkpoint):
    """The harness itself: a harmless raw value in a real checkpoint loads and resumes."""
    ckpt = load_mmengine_checkpoint(real_checkpoint)
    path = write_with_payload(ckpt, tmp_path / 'plain.pth', b'K\x07')  # BININT1 7
    loaded = load_mmengine_checkpoint(path)
    assert loaded['payload'] == 7
    buffers = loaded['message_hub']['log_scalars']
    assert buffers and all(type(b) is HistoryBuffer for b in buffers.values())
    name, buf = next(iter(buffers.items()))
    orig = ckpt['message_hub']['log_scalars'][name]
    assert buf.mean() == orig.mean() and buf.max_length == orig.max_length


@pytest.mark.parametrize('name', PAYLOAD_NAMES)
def test_mmengine_loader_refuses_payload(tmp_path, real_checkpoint, name):
    marker = tmp_path / 'ran'
    ckpt = load_mmengine_checkpoint(real_checkpoint)
    path = write_with_payload(ckpt, tmp_path / 'crafted.pth', payloads(marker)[name])
    with pytest.raises(UnsafeCheckpointError) as err:
        load_mmengine_checkpoint(path)
    assert_refused_cleanly(err, marker)
    assert 'crafted.pth' in str(err.value)


def _crafted(tmp_path, real_checkpoint):
    marker = tmp_path / 'ran'
    ckpt = load_mmengine_checkpoint(real_checkpoint)
    payload = payloads(marker)['exec through getattr chain and planted __setstate__']
    return write_with_payload(ckpt, tmp_path / 'epoch_1.pth', payload), marker


def test_resume_refuses_payload(tmp_path, real_checkpoint):
    path, marker = _crafted(tmp_path, real_checkpoint)
    cfg = tiny_cls_cfg(tmp_path / 'run', max_epochs=2, train_size=32)
    cfg.resume, cfg.load_from = True, path
    with pytest.raises(UnsafeCheckpointError) as err:
        Runner.from_cfg(cfg).train()
    assert_refused_cleanly(err, marker)


def test_tools_train_resume_refuses_payload(tmp_path, real_checkpoint):
    """As the issue found it: ``tools/train.py --resume`` on a crafted ``epoch_N.pth``."""
    path, marker = _crafted(tmp_path, real_checkpoint)
    config = tmp_path / 'tiny.py'
    config.write_text(
        f"_base_ = '{REPO}/configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'\n"
        "model = dict(backbone=dict(base_channels=8), in_channels=64)\n"
        "_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]\n"
        "train_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False, "
        "dataset=dict(indices=32, pipeline=_pipeline))\n"
        "train_cfg = dict(max_epochs=2)\nparam_scheduler = []\n")
    result = subprocess.run(
        [sys.executable, 'tools/train.py', str(config), '--work-dir', str(tmp_path / 'run'),
         '--resume', path], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'UnsafeCheckpointError' in result.stderr
    assert 'Nothing in the file was executed' in result.stderr
    assert not marker.exists()


def test_load_from_refuses_payload(tmp_path, real_checkpoint):
    path, marker = _crafted(tmp_path, real_checkpoint)
    cfg = tiny_cls_cfg(tmp_path / 'run', max_epochs=1, train_size=32)
    cfg.load_from = path
    with pytest.raises(UnsafeCheckpointError) as err:
        Runner.from_cfg(cfg).train()
    assert_refused_cleanly(err, marker)


@pytest.mark.parametrize('init_type', ['Pretrained', 'mmrecprune.StrictPretrained'])
def test_init_cfg_refuses_payload(tmp_path, real_checkpoint, init_type):
    from mmdet.models.backbones import ResNet
    path, marker = _crafted(tmp_path, real_checkpoint)
    backbone = ResNet(depth=18, base_channels=8,
                      init_cfg=dict(type=init_type, prefix='backbone.', checkpoint=path))
    with pytest.raises(UnsafeCheckpointError) as err:
        backbone.init_weights()
    assert_refused_cleanly(err, marker)


def test_init_detector_refuses_payload(tmp_path, real_checkpoint):
    from mmdet.apis import init_detector
    path, marker = _crafted(tmp_path, real_checkpoint)
    config = osp.join(REPO, 'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py')
    with pytest.raises(UnsafeCheckpointError) as err:
        init_detector(config, path, device='cpu')
    assert_refused_cleanly(err, marker)


@pytest.mark.parametrize('name', PAYLOAD_NAMES[:2])
def test_ticket_refuses_payload(tmp_path, name):
    from mmdet.models.backbones import ResNet

    from mmrecprune.tickets import TicketError, load_ticket, save_ticket
    marker = tmp_path / 'ran'
    net = ResNet(depth=18, base_channels=8)
    good = save_ticket(str(tmp_path / 'good.pth'), dict(type='mmdet.ResNet', depth=18,
                                                         base_channels=8), net.state_dict())
    ticket = torch.load(good, weights_only=True)
    path = write_with_payload(ticket, tmp_path / 'crafted.pth', payloads(marker)[name])
    with pytest.raises(TicketError) as err:
        load_ticket(path)
    assert_refused_cleanly(err, marker)


def test_plain_torch_load_keeps_pytorch_defaults(real_checkpoint):
    """The stand-ins are in force only inside MMEngine's loader."""
    with pytest.raises(pickle.UnpicklingError):
        torch.load(real_checkpoint)
