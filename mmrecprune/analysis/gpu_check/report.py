"""The GPU check's JSON: the machine, the arguments and one entry per section, written again
after every section; and the time budget sections are measured against."""
import contextlib
import json
import os
import os.path as osp
import sys
import tempfile
import time
import traceback

import torch


class Deadline:
    """The time left of ``budget`` seconds from now."""

    def __init__(self, budget):
        self.end = time.monotonic() + budget

    def left(self):
        return self.end - time.monotonic()

    def allows(self, seconds):
        return self.left() >= seconds


class Report:
    """The one JSON of a run: machine, arguments, and per section its status (``ok``,
    ``failed``, ``skipped``), seconds, checks, figures and notes. :meth:`write` replaces the file
    atomically; it is called after every section."""

    def __init__(self, path, args=None):
        self.path = path
        self.data = dict(machine=machine(), args=dict(vars(args)) if args else {},
                         started=time.strftime('%Y-%m-%d %H:%M:%S'), sections={})

    @contextlib.contextmanager
    def section(self, name, deadline=None, needs=0.0, skip=None):
        """Run the body as section ``name``; skip it (yield None) when ``skip`` gives a reason
        or fewer than ``needs`` seconds are left; record an exception as ``failed``."""
        entry = dict(status='ok', checks={}, figures={}, notes=[])
        self.data['sections'][name] = entry
        if skip is None and deadline is not None and not deadline.allows(needs):
            skip = f'{deadline.left():.0f} s left of the budget, the section needs ~{needs:.0f}'
        if skip:
            entry.update(status='skipped', reason=skip)
            self.write()
            yield None
            return
        start = time.monotonic()
        try:
            yield entry
            failed = [k for k, v in entry['checks'].items() if v is False]
            if failed:
                entry['status'] = 'failed'
                entry['reason'] = f'checks failed: {failed}'
        except Exception as err:  # noqa: BLE001  a section's failure is a result
            entry.update(status='failed', reason=f'{type(err).__name__}: '
                                                 f'{" ".join(str(err).split())[:500]}',
                         traceback=traceback.format_exc()[-3000:])
        finally:
            entry['seconds'] = round(time.monotonic() - start, 1)
            self.write()

    def write(self):
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(self.path)), suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(self.data, f, indent=1, default=_jsonable)
        os.replace(tmp, self.path)


def _jsonable(value):
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return repr(value)


def machine():
    """The machine in words: the GPU, its capability, driver-side versions, CPU threads."""
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
                cpu_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0),
                    capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory
                                         / 2 ** 30, 1),
                    cudnn=torch.backends.cudnn.version())
    for name in ('mmengine', 'mmcv', 'mmdet', 'torch_pruning'):
        try:
            from importlib.metadata import version
            info[name] = version(name.replace('_', '-'))
        except Exception:  # noqa: BLE001
            info[name] = None
    return info
