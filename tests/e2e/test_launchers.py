"""Cluster launchers and the distributed backend: Slurm scripts with MMDetection's arguments,
NCCL in the configs for GPU runs, gloo started by the tools on CPU."""
import glob
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

from tests.conftest import REPO, repo_path

FAKE_SRUN = """#!/usr/bin/env bash
echo "SRUN $@"
echo "PYTHONPATH=$PYTHONPATH"
"""


@pytest.mark.parametrize('script, args, expected', [
    ('tools/slurm_train.sh', ['gpu', 'prune', 'configs/psap/psap_r50_8xb32-30e_imagenet.py',
                              'work_dirs/x', '--amp'],
     ['-p gpu', '--job-name=prune', '--gres=gpu:4', '--ntasks=8', '--ntasks-per-node=4',
      'tools/train.py configs/psap/psap_r50_8xb32-30e_imagenet.py --work-dir=work_dirs/x '
      '--launcher=slurm --amp']),
    ('tools/slurm_test.sh', ['gpu', 'eval', 'configs/psap/psap_r50_8xb32-30e_imagenet.py',
                             'ckpt.pth'],
     ['-p gpu', '--job-name=eval',
      'tools/test.py configs/psap/psap_r50_8xb32-30e_imagenet.py ckpt.pth --launcher=slurm']),
])
def test_slurm_scripts_call_srun_with_mmdets_arguments(tmp_path, script, args, expected):
    fake = tmp_path / 'srun'
    fake.write_text(FAKE_SRUN)
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}', GPUS='8',
               GPUS_PER_NODE='4')
    out = subprocess.run(['bash', script, *args], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout
    line = next(s for s in out.splitlines() if s.startswith('SRUN '))
    for part in expected:
        assert part in line.replace('"', ''), (part, line)
    assert 'tools/..' in out  # the repo is importable on every node


def test_slurm_launch_without_gpus_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py',
         '--work-dir', str(tmp_path), '--launcher', 'slurm',
         '--cfg-options', 'load_from=None'],  # no pretraining in a fresh clone
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode != 0
    assert "launcher 'slurm' needs GPUs here; use --launcher pytorch" in result.stderr
    assert not list(tmp_path.glob('*.pth'))


CONFIGS = sorted(p for p in glob.glob(repo_path('configs/**/*.py'), recursive=True)
                 if '/_base_/' not in p or p.endswith('runtime.py'))


@pytest.mark.parametrize('path', CONFIGS)
def test_no_shipped_config_forces_gloo_on_gpus(path):
    cfg = Config.fromfile(path)
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    assert backend == 'nccl', f'{path} sets dist backend {backend!r}'
