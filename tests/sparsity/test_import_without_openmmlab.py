"""The engine, the ticket format, the CLI helpers and the scenes data set's generator import
with MMCV / MMDetection / MMSegmentation hidden, and whatever needs them names the missing
library when it is used."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

#: a meta-path finder, first in line, that refuses the OpenMMLab model libraries
HIDE = textwrap.dedent('''
    import sys

    HIDDEN = ('mmcv', 'mmdet', 'mmseg')

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in HIDDEN:
                raise ModuleNotFoundError(f'No module named {name!r} (hidden)', name=name)
            return None

    sys.meta_path.insert(0, Hide())
''')


def _run(code):
    proc = subprocess.run([sys.executable, '-c', HIDE + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sparsity_imports_and_works_without_mmcv_mmdet():
    out = _run('''
        import torch
        from torch import nn

        import mmrecprune.ops  # noqa: F401  (the compiled kernels are plain PyTorch too)
        import mmrecprune.sparsity as sp

        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
        params = sp.prunable_parameters(model, exclude=())
        masks = sp.global_magnitude_masks(params, sp.init_masks(params), 0.5)
        sp.apply_masks(params, masks)
        zeros = sum(int((p == 0).sum()) for p in params.values())
        assert zeros == sum(p.numel() for p in params.values()) // 2, zeros
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in HIDDEN)
        print('LOADED', loaded)
    ''')
    assert 'LOADED []' in out


def test_ticket_format_and_cli_import_without_mmcv_mmdet():
    _run('''
        import mmrecprune.cli
        import mmrecprune.ticket_schema
        import mmrecprune.tickets  # noqa: F401
        assert not [m for m in sys.modules if m.split('.')[0] in HIDDEN]
    ''')


def _write_fashion_mnist(folder, num_items=20):
    """The four Fashion-MNIST IDX files, random images and labels (the tool's input)."""
    import numpy as np
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix in ('train', 't10k'):
        for name, array in ((f'{prefix}-images-idx3-ubyte',
                             rng.integers(0, 256, (num_items, 28, 28), dtype=np.uint8)),
                            (f'{prefix}-labels-idx1-ubyte',
                             rng.integers(0, 10, num_items, dtype=np.uint8))):
            header = bytes([0, 0, 8, array.ndim]) + b''.join(
                int(d).to_bytes(4, 'big') for d in array.shape)
            (folder / name).write_bytes(header + array.tobytes())
    return folder


def test_scenes_converter_runs_without_mmcv_mmdet(tmp_path):
    """tools/dataset_converters/make_fashion_scenes.py prepares data before MMCV is installed:
    it imports mmrecprune.datasets.scenes, which loads no OpenMMLab model library, and runs;
    the datasets package then names MMCV where a registered transform is used."""
    fashion = _write_fashion_mnist(tmp_path / 'fashion')
    out = _run(f'''
        import importlib.util
        import os

        spec = importlib.util.spec_from_file_location(
            'make_fashion_scenes', 'tools/dataset_converters/make_fashion_scenes.py')
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        assert tool.scenes.__name__ == 'mmrecprune.datasets.scenes', tool.scenes.__name__
        tool.main(['--out-dir', {str(tmp_path / 'scenes')!r}, '--fashion-root', {str(fashion)!r},
                   '--num-train', '2', '--num-test', '1', '--canvas-size', '48'])
        assert len(os.listdir({str(tmp_path / 'scenes' / 'train' / 'images')!r})) == 2
        print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in HIDDEN))
        import mmrecprune.datasets
        import mmrecprune.registry
        for use in ('mmrecprune.datasets.PackClsInputs',
                    "mmrecprune.registry.TRANSFORMS.get('mmrecprune.PackClsInputs')"):
            try:
                eval(use)
            except ModuleNotFoundError as err:
                print(use, '->', err.name)
            else:
                raise AssertionError(f'{{use}} worked with mmcv hidden')
    ''')
    assert 'LOADED []' in out, out
    assert out.count('-> mmcv') == 2, out


def test_what_needs_mmdet_says_so():
    out = _run('''
        import mmrecprune.registry
        for use in ('import mmrecprune.models', 'mmrecprune.models',
                    "mmrecprune.registry.MODELS.get('mmrecprune.ImageClassifier')"):
            try:
                exec(use)
            except ModuleNotFoundError as err:
                print(use, '->', err.name)
            else:
                raise AssertionError(f'{use} worked with mmdet hidden')
    ''')
    assert out.count('-> mmdet') + out.count('-> mmcv') == 3, out


@pytest.mark.parametrize('hidden', ['mmdet', 'mmcv'])
def test_broken_install_still_raises_on_import(hidden):
    """Only a library that is not installed at all is skipped: one that fails inside (here a
    submodule of it) still stops ``import mmrecprune``."""
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(f'''
        import sys
        class Broken:
            def find_spec(self, name, path=None, target=None):
                if name.startswith('{hidden}.') and name.count('.') == 1:
                    raise ImportError('broken install', name=name)
        sys.meta_path.insert(0, Broken())
        import mmrecprune.registry
    ''')], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'broken install' in proc.stderr, proc.stderr
