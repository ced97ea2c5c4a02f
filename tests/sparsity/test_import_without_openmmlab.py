"""The engine, the ticket format and the CLI helpers import with MMCV / MMDetection /
MMSegmentation hidden, and whatever needs them names the missing library when it is used."""
import subprocess
import sys
import textwrap

import pytest

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
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sparsity_imports_and_works_without_mmcv_mmdet():
    out = _run('''
        import torch
        from torch import nn

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
