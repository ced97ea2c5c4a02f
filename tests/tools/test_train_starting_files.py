"""A config whose starting file (``load_from``, a ticket, a backbone checkpoint) is missing
stops ``tools/train.py`` before anything is built, with the option, the file and the config
that writes it; URLs and files that exist pass."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmrecprune.cli import CLIError, check_starting_files
from tests.conftest import REPO

CASES = [
    ('configs/imp/imp_r50_11r-10e_8xb32_imagenet.py', 'load_from',
     'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth',
     'configs/pretrain/resnet50_8xb32-90e_imagenet.py'),
    ('configs/downstream/mmdet/retinanet_r50-ticket_fpn_1x_coco.py', 'model.backbone.ticket',
     'work_dirs/recprune_r50_11r-10e_8xb32_imagenet/tickets/round_7.pth',
     'configs/recprune/recprune_r50_11r-10e_8xb32_imagenet.py'),
    ('configs/downstream/mmseg/fcn_r50-d8_4xb4-80k_ade20k-512x512.py',
     'model.backbone.init_cfg.checkpoint', 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth',
     'configs/pretrain/resnet50_8xb32-90e_imagenet.py'),
]


@pytest.mark.parametrize('config, option, path, writer', CASES)
def test_missing_starting_file_names_it_and_its_config(tmp_path, config, option, path, writer):
    result = subprocess.run([sys.executable, osp.join(REPO, 'tools/train.py'),
                             osp.join(REPO, config)], cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith('train.py: error: '), result.stderr
    for part in (option, path, f'python tools/train.py {writer}', f'--cfg-options {option}='):
        assert part in message[0], (part, message[0])
    assert os.listdir(tmp_path) == []  # nothing was built or written


def test_existing_files_and_urls_pass(tmp_path):
    start = tmp_path / 'start.pth'
    start.write_bytes(b'')
    cfg = Config.fromfile(osp.join(REPO, CASES[0][0]))
    cfg.load_from = str(start)
    check_starting_files(cfg)
    cfg.load_from = 'https://download.openmmlab.com/x.pth'
    check_starting_files(cfg)


def test_mmseg_shipped_model_level_pretrained_url_passes():
    import mmseg
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'fcn',
                    'fcn_r50-d8_4xb4-80k_ade20k-512x512.py')
    cfg = Config.fromfile(path)
    assert cfg.model.pretrained.startswith('open-mmlab://')
    check_starting_files(cfg)
    cfg.model.pretrained = 'missing/resnet50_v1c.pth'
    with pytest.raises(CLIError, match='model.pretrained missing/resnet50_v1c.pth'):
        check_starting_files(cfg)
