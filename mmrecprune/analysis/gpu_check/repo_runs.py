"""How the GPU check runs this checkout's tools: a synthetic Fashion-MNIST, shrunk configs, the
tools' environment and logs, and the checkpoints they write."""
import os
import os.path as osp
import subprocess
import sys


def _repo_root():
    """The checkout whose tools/ and configs/ the checks run: the one this package is in, else
    the working directory (gpu_check.sh runs from the checkout's root)."""
    here = osp.abspath(__file__)
    for _ in range(4):  # gpu_check/, analysis/, mmrecprune/, the checkout
        here = osp.dirname(here)
    return here if osp.isfile(osp.join(here, 'tools', 'train.py')) else os.getcwd()


REPO = _repo_root()

#: two IMP rounds of 20 % on the tiny IMP config: the runs of the amp and ddp sections
IMP_CONFIG = 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'
TWO_IMP_ROUNDS = """
rounds = 2
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1,
                     example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2,
                                 rewind_to='pretrained', method='imp'))]
train_cfg = dict(max_epochs=2, val_interval=1)
"""


def write_synthetic_fashion_mnist(folder, num_train=256, num_test=64, seed=0):
    """The four Fashion-MNIST IDX files with random images and labels (the checks test the
    mechanics, not accuracy; the GPU machine has no data sets). Returns ``folder``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (('train', num_train), ('t10k', num_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n, ), dtype=np.uint8)
        for name, array in ((f'{prefix}-images-idx3-ubyte', images),
                            (f'{prefix}-labels-idx1-ubyte', labels)):
            header = bytes([0, 0, 8, array.ndim]) + b''.join(
                int(d).to_bytes(4, 'big') for d in array.shape)
            with open(osp.join(folder, name), 'wb') as f:
                f.write(header + array.tobytes())
    return folder


TINY_RUN = """
model = dict(backbone=dict(base_channels=16), in_channels=128)
_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=32, dataset=dict(indices=128, pipeline=_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(indices=64, pipeline=_pipeline))
test_dataloader = val_dataloader
load_from = None
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))
"""


def tool_env(work):
    """The environment of the repo tools the checks run: a synthetic Fashion-MNIST under
    ``work``, this checkout on PYTHONPATH, this Python first on PATH (dist_train.sh calls
    ``python``)."""
    data = write_synthetic_fashion_mnist(osp.join(work, 'fashion_mnist'))
    return dict(os.environ, FASHION_MNIST_ROOT=data, PYTHONUNBUFFERED='1',
                PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))


def tiny_config(folder, name, base, extra):
    """A config at ``folder/name`` that shrinks the repo's ``base`` and appends ``extra``."""
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write(f"_base_ = '{osp.join(REPO, base)}'\n" + TINY_RUN + extra)
    return path


def run_repo_tool(cmd, env, log_path):
    """Run a repo tool (``cmd`` relative to the repo); its output goes to ``log_path``; raise
    with the log's tail if it fails."""
    with open(log_path, 'w') as log:
        result = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=300)
    if result.returncode:
        tail = open(log_path).read()[-2000:]
        raise RuntimeError(f'{" ".join(cmd[:4])} ... exited {result.returncode}:\n{tail}')
    return open(log_path).read()


def checkpoint_state(path):
    from mmrecprune.fileio import load_mmengine_checkpoint
    ckpt = load_mmengine_checkpoint(path, map_location='cpu')
    return ckpt['state_dict'], ckpt
