"""CPU-only distributed runs (a gloo process group, a DDP wrapper for CPU modules) and the
process group's teardown, shared by tools/train.py and tools/test.py."""
import gc

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel

from mmrecprune.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper for CPU modules: MMEngine passes ``device_ids=[LOCAL_RANK]``,
    which DDP accepts only for GPU modules, so it is dropped here."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def setup_cpu_distributed(cfg, launcher, backend='gloo'):
    """Make ``--launcher pytorch`` work with no GPU (e.g. ``tools/dist_train.sh CFG 2``).

    MMEngine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper passes
    ``device_ids``; both fail on a CPU build of PyTorch. With no GPU, start the gloo process
    group here (the runner then skips its own set-up) and use
    :class:`CPUDistributedDataParallel` unless the config names a wrapper. GPU runs are
    left to MMEngine untouched.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'launcher {launcher!r} needs GPUs here; use --launcher pytorch '
                           '(tools/dist_train.sh) for CPU runs')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    cfg.setdefault('model_wrapper_cfg', dict(type='mmrecprune.CPUDistributedDataParallel'))


def teardown_distributed():
    """Destroy the process group before exit, after the caller has dropped its runner.

    A gloo process group still referenced at interpreter shutdown (the DDP wrapper's reducer
    holds one, and the runner sits in reference cycles, so only the final GC frees it) is
    destroyed with no Python frame left, which aborts the process about once in 15 runs under
    load ("terminate called without an active exception"). Collecting first frees it while
    the interpreter is whole."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        gc.collect()
        torch_dist.destroy_process_group()
        gc.collect()
