"""Every payload class that once got through a loader, as a regression test.

Each payload is hidden as one extra key in a real MMEngine checkpoint (``epoch_1.pth`` of a
tiny run) and in a real ticket, and loaded in a subprocess under a memory limit
(:func:`~mmrecprune.testing.checkpoint_fuzzer.run_cases`): it must be refused with the
project's error, no marker file may appear, the process may not die, its memory may not grow
beyond the stated bound, and HistoryBuffer's class-wide statistics table must be unchanged.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner
from mmengine.utils import digit_version

from mmrecprune.fileio import UnsafeCheckpointError, load_mmengine_checkpoint, read_plain
from mmrecprune.testing.checkpoint_fuzzer import run_cases
from mmrecprune.tickets import save_ticket
from tests.conftest import REPO, tiny_cls_cfg
from tests.security.payloads import EXEC, NEW_HISTORY_BUFFER, marker_code, payloads, \
    write_with_payload

pytestmark = pytest.mark.usefixtures('single_thread')
#: a load may grow the process by at most this many times the file's size, plus a constant
MEMORY_FACTOR, MEMORY_CONSTANT = 4, 64 * 2 ** 20


def _ticket_data(folder):
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, base_channels=8)
    path = save_ticket(str(folder / 'good_ticket.pth'),
                       dict(type='mmdet.ResNet', depth=18, base_channels=8), net.state_dict())
    return read_plain(path)


def test_every_payload_is_refused_in_a_subprocess(tmp_path, training_checkpoint):
    marker = tmp_path / 'ran'
    sources = dict(checkpoint=load_mmengine_checkpoint(training_checkpoint),
                   ticket=_ticket_data(tmp_path))
    cases = []
    for kind, obj in sources.items():
        for i, (name, (ops, records)) in enumerate(payloads(marker).items()):
            path = write_with_payload(obj, tmp_path / f'{kind}_{i}.pth', ops, records)
            cases.append(dict(path=path, kind=kind, name=name, size=osp.getsize(path)))
    done, peak = run_cases(cases, str(tmp_path))
    bad = [(c['kind'], c['name'], c['outcome']) for c in done if c['outcome'] != 'refused']
    assert not bad
    assert not marker.exists(), 'a payload ran'
    assert not any(c['stats_changed'] for c in done)
    assert peak <= MEMORY_FACTOR * max(c['size'] for c in cases) + MEMORY_CONSTANT


def test_the_harness_sees_what_plain_torch_load_runs(tmp_path, training_checkpoint):
    """The same subprocess harness with ``torch.load(weights_only=False)`` reports the run
    payload (marker written), so the test above can fail."""
    marker = tmp_path / 'ran'
    ckpt = load_mmengine_checkpoint(training_checkpoint)
    path = write_with_payload(ckpt, tmp_path / 'exec.pth',
                              b'c__builtin__\nexec\n' + marker_code(marker) + b'\x85R')
    done, _ = run_cases([dict(path=path, kind='unsafe', name='exec')], str(tmp_path))
    assert done[0]['outcome'] == 'loaded' and marker.exists()


def _crafted(tmp_path, training_checkpoint):
    marker = tmp_path / 'ran'
    payload = NEW_HISTORY_BUFFER + b'}' + b'X\x0c\x00\x00\x00__setstate__' + EXEC + b'sb' + \
        marker_code(marker) + b'b'
    path = write_with_payload(load_mmengine_checkpoint(training_checkpoint),
                              tmp_path / 'epoch_1.pth', payload)
    return path, marker


def _assert_refused(err, marker):
    assert 'Nothing in the file was executed' in str(err.value)
    assert not marker.exists(), 'the payload ran'


def test_resume_refuses_payload(tmp_path, training_checkpoint):
    path, marker = _crafted(tmp_path, training_checkpoint)
    cfg = tiny_cls_cfg(tmp_path / 'run', max_epochs=2, train_size=32)
    cfg.resume, cfg.load_from = True, path
    with pytest.raises(UnsafeCheckpointError) as err:
        Runner.from_cfg(cfg).train()
    _assert_refused(err, marker)


def test_load_from_refuses_payload(tmp_path, training_checkpoint):
    path, marker = _crafted(tmp_path, training_checkpoint)
    cfg = tiny_cls_cfg(tmp_path / 'run', max_epochs=1, train_size=32)
    cfg.load_from = path
    with pytest.raises(UnsafeCheckpointError) as err:
        Runner.from_cfg(cfg).train()
    _assert_refused(err, marker)


@pytest.mark.parametrize('init_type', ['Pretrained', 'mmrecprune.StrictPretrained'])
def test_init_cfg_refuses_payload(tmp_path, training_checkpoint, init_type):
    from mmdet.models.backbones import ResNet
    path, marker = _crafted(tmp_path, training_checkpoint)
    backbone = ResNet(depth=18, base_channels=8,
                      init_cfg=dict(type=init_type, prefix='backbone.', checkpoint=path))
    with pytest.raises(UnsafeCheckpointError) as err:
        backbone.init_weights()
    _assert_refused(err, marker)


def test_init_detector_refuses_payload(tmp_path, training_checkpoint):
    from mmdet.apis import init_detector
    path, marker = _crafted(tmp_path, training_checkpoint)
    config = osp.join(REPO, 'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py')
    with pytest.raises(UnsafeCheckpointError) as err:
        init_detector(config, path, device='cpu')
    _assert_refused(err, marker)


def test_tools_refuse_payload(tmp_path, training_checkpoint):
    """As the issue found it: ``tools/train.py --resume`` and the model converter on a crafted
    ``epoch_N.pth`` stop with one line and run nothing."""
    path, marker = _crafted(tmp_path, training_checkpoint)
    config = tmp_path / 'tiny.py'
    config.write_text(
        f"_base_ = '{REPO}/configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'\n"
        "model = dict(backbone=dict(base_channels=8), in_channels=64)\n"
        "_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]\n"
        "train_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False, "
        "dataset=dict(indices=32, pipeline=_pipeline))\n"
        "train_cfg = dict(max_epochs=2)\nparam_scheduler = []\n")
    for command in (['tools/train.py', str(config), '--work-dir', str(tmp_path / 'run'),
                     '--resume', path],
                    ['tools/model_converters/starting_weights.py', '--config', str(config), path,
                     str(tmp_path / 'out.pth')]):
        result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True,
                                text=True, timeout=300,
                                env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert result.returncode != 0
        assert 'Nothing in the file was executed' in result.stderr
        assert not marker.exists()


def test_nothing_is_allow_listed_in_torch_itself(training_checkpoint):
    """torch.load(weights_only=True) still refuses MMEngine's objects: the project's loader
    reads them, torch's allow-list is left as it was (every torch version)."""
    import pickle
    with pytest.raises(pickle.UnpicklingError):
        torch.load(training_checkpoint, weights_only=True)


@pytest.mark.skipif(digit_version(torch.__version__) < digit_version('2.6.0'),
                    reason='torch.load defaults to weights_only=True from torch 2.6')
def test_plain_torch_load_keeps_pytorch_defaults(training_checkpoint):
    """A plain torch.load (PyTorch's default, weights_only=True) refuses MMEngine's objects:
    importing mmrecprune changes no default of torch's."""
    import pickle
    with pytest.raises(pickle.UnpicklingError):
        torch.load(training_checkpoint)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.int8])
def test_plain_history_of_another_dtype_is_refused(tmp_path, dtype):
    """A plain checkpoint's history tensors are rebuilt through NumPy: a dtype mmrecprune
    never writes there (bfloat16 has no NumPy equivalent) is refused with the dtypes it
    takes, not a TypeError from the conversion."""
    history = dict(log_history=torch.zeros(2, dtype=dtype),
                   count_history=torch.ones(2, dtype=torch.int64), max_length=2)
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1), message_hub=dict(log_scalars=dict(loss=history))), path)
    with pytest.raises(UnsafeCheckpointError, match='float64, float32 or int64'):
        load_mmengine_checkpoint(str(path))
    history['log_history'] = torch.zeros(2, dtype=torch.float64)
    torch.save(dict(meta=dict(epoch=1), message_hub=dict(log_scalars=dict(loss=history))), path)
    loaded = load_mmengine_checkpoint(str(path))['message_hub']['log_scalars']['loss']
    assert loaded.data[1].tolist() == [1, 1]
