"""Packaging: the environment is consistent (``pip check``), the ranges pyproject.toml declares
include what is installed and match what MMDetection / MMSegmentation accept, a wheel ships
configs/, tools/ and model-index.yml under ``mmrecprune/.mim`` as OpenMMLab packages do, and
LICENSE, CITATION.cff and model-index.yml are in order."""
import glob
import importlib.metadata as metadata
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
pytest.importorskip('packaging')
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.version import Version  # noqa: E402

PYPROJECT = tomllib.load(open(osp.join(REPO, 'pyproject.toml'), 'rb'))
DEPENDENCIES = [Requirement(r) for r in PYPROJECT['project']['dependencies']]
EXTRAS = {name: [Requirement(r) for r in reqs]
          for name, reqs in PYPROJECT['project']['optional-dependencies'].items()}


def _declared(name, reqs=DEPENDENCIES):
    found = [r for r in reqs if r.name.lower() == name]
    assert len(found) == 1, f'{name} declared {len(found)} times'
    return found[0].specifier


def _bound(spec, op):
    versions = [Version(s.version) for s in spec if s.operator == op]
    assert len(versions) == 1, f'{spec} has {len(versions)} {op!r} bounds'
    return versions[0]


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_pip_check_passes():
    result = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0 and 'No module named pip' in result.stderr:
        pytest.skip('pip is not installed in this environment')
    assert result.returncode == 0, result.stdout + result.stderr


def test_declared_ranges_include_installed_versions():
    for req in DEPENDENCIES:
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = _installed(req.name)
        assert version is not None, f'{req} is declared but not installed'
        assert req.specifier.contains(Version(version).public, prereleases=True), \
            f'installed {req.name} {version} is outside the declared {req}'


def test_deploy_extra_includes_installed_versions_when_installed():
    deploy = EXTRAS['deploy']
    if not all(_installed(r.name) for r in deploy):
        pytest.skip('the deploy extra is not installed')
    for req in deploy:
        version = Version(_installed(req.name)).public
        assert req.specifier.contains(version, prereleases=True), f'{req.name} {version}: {req}'


def test_no_exact_pins_in_the_package_dependencies():
    # exact versions belong to the embedded venv (tools/setup_env.sh), not to the package
    for req in DEPENDENCIES:
        assert not any(s.operator in ('==', '===') for s in req.specifier), str(req)


def test_torch_floor_is_the_one_the_safe_loader_needs():
    # Tensor.untyped_storage() (the safe reader) came with torch 2.0
    assert _bound(_declared('torch'), '>=') == Version('2.0')
    # dynamo export of a BatchNorm model works from torch 2.7 with onnxscript >= 0.6.1 (0.6.0
    # fails the opset conversion on torch 2.7-2.9; torch >= 2.11 needs the 0.6 API): see
    # pyproject.toml
    assert _bound(_declared('torch', EXTRAS['deploy']), '>=') == Version('2.7')
    assert _bound(_declared('onnxscript', EXTRAS['deploy']), '>=') >= Version('0.6.1')


def test_openmmlab_ranges_match_what_mmdet_and_mmseg_accept():
    mmdet = pytest.importorskip('mmdet')
    mmseg = pytest.importorskip('mmseg')
    mmcv, mmengine = _declared('mmcv'), _declared('mmengine')
    # The mmcv range is the union over the mmdet 3.x / mmseg 1.x releases declared: 3.1.0 and
    # 1.1.1 assert mmcv < 2.1.0, the newest (3.3.0, 1.2.2) < 2.2.0. Each checks at import, so the
    # installed pair is also held to its own range (the import above).
    assert _bound(mmcv, '<') >= max(Version(mmdet.mmcv_maximum_version), Version(mmseg.MMCV_MAX))
    if Version(mmdet.__version__) >= Version('3.3.0'):
        assert _bound(mmcv, '<') == Version(mmdet.mmcv_maximum_version) == Version(mmseg.MMCV_MAX)
    assert _bound(mmcv, '>=') >= max(Version(mmdet.mmcv_minimum_version),
                                     Version(mmseg.MMCV_MIN))
    assert _bound(mmengine, '<') == Version(mmdet.mmengine_maximum_version) == \
        Version(mmseg.MMENGINE_MAX)
    # 0.10.3 rather than their 0.7.1: older MMEngine fails the test suite (pyproject.toml says how)
    assert _bound(mmengine, '>=') >= max(Version(mmdet.mmengine_minimum_version),
                                         Version(mmseg.MMENGINE_MIN))
    # raised floors (see pyproject.toml): where the test suite passes
    assert _declared('mmengine') == SpecifierSet('>=0.10.3,<1.0.0')
    assert _declared('mmdet') == SpecifierSet('>=3.1.0,<4.0.0')
    assert _declared('mmsegmentation') == SpecifierSet('>=1.1.1,<2.0.0')


def test_setuptools_range_keeps_pkg_resources():
    # MMEngine resolves `mmdet::` / `mmseg::` base configs with pkg_resources (gone in 82)
    assert _bound(_declared('setuptools'), '<') <= Version('82')
    from mmengine.utils import get_installed_path
    assert osp.isdir(get_installed_path('mmdet'))


# model-index.yml, LICENSE, CITATION.cff


def test_model_index_imports_every_metafile():
    index = yaml.safe_load(open(osp.join(REPO, 'model-index.yml')))
    metafiles = sorted(osp.relpath(p, REPO)
                       for p in glob.glob(osp.join(REPO, 'configs', '*', 'metafile.yml')))
    assert metafiles, 'no configs/*/metafile.yml'
    assert sorted(index['Import']) == metafiles


def test_metafiles_name_existing_configs_and_readmes():
    # OpenMMLab convention (mmdet): paths are relative to the repository / the .mim folder
    for rel in yaml.safe_load(open(osp.join(REPO, 'model-index.yml')))['Import']:
        meta = yaml.safe_load(open(osp.join(REPO, rel)))
        collections = {c['Name'] for c in meta.get('Collections', [])}
        for coll in meta.get('Collections', []):
            if 'README' in coll:
                assert osp.isfile(osp.join(REPO, coll['README'])), f"{rel}: {coll['README']}"
        assert meta.get('Models'), f'{rel} lists no models'
        for model in meta['Models']:
            assert model['Name'], rel
            assert model['In Collection'] in collections, f"{rel}: {model['Name']}"
            assert osp.isfile(osp.join(REPO, model['Config'])), f"{rel}: {model['Config']}"


def test_license_is_apache_2():
    text = open(osp.join(REPO, 'LICENSE')).read()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text and 'mmrecprune contributors' in text
    assert PYPROJECT['project']['license'] == 'Apache-2.0'


def test_citation_cff():
    cff = yaml.safe_load(open(osp.join(REPO, 'CITATION.cff')))
    assert cff['cff-version'] == '1.2.0'
    assert cff['message'] and cff['title'] and cff['authors']
    assert str(cff['version']) == PYPROJECT['project']['version']
    assert cff['license'] == 'Apache-2.0'
    try:
        from cffconvert.cli.create_citation import create_citation
    except ImportError:
        return  # the full schema check needs cffconvert (`cffconvert --validate`)
    create_citation(osp.join(REPO, 'CITATION.cff'), None).validate()


# .mim: configs/, tools/ and model-index.yml inside the package

MIM_ENTRIES = ('configs', 'tools', 'model-index.yml')


def test_mim_links_in_the_source_tree_point_at_the_repository():
    # what an editable install (`pip install -e .`) sees
    import mmrecprune
    mim = osp.join(osp.dirname(mmrecprune.__file__), '.mim')
    for name in MIM_ENTRIES:
        assert osp.exists(osp.join(mim, name)), name
        assert osp.samefile(osp.join(mim, name), osp.join(REPO, name)), name


@pytest.fixture(scope='module')
def installed_wheel(tmp_path_factory):
    """A non-editable ``pip install`` of a copy of the repository into a --target folder."""
    # pyproject.toml's build-system (an SPDX `license`) needs setuptools >= 77
    pytest.importorskip('setuptools', minversion='77.0.3')
    root = tmp_path_factory.mktemp('pkg')
    src, target = root / 'src', root / 'site'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info', 'build')
    os.makedirs(src)
    for name in ('pyproject.toml', 'README.md', 'LICENSE', 'model-index.yml'):
        shutil.copy2(osp.join(REPO, name), src / name)
    for name in ('mmrecprune', 'configs', 'tools'):
        shutil.copytree(osp.join(REPO, name), src / name, symlinks=True, ignore=ignore)
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
         '--no-compile', '--target', str(target), str(src)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target


def _repo_files(folder, exts):
    return sorted(osp.relpath(p, REPO) for ext in exts
                  for p in glob.glob(osp.join(REPO, folder, '**', f'*.{ext}'), recursive=True)
                  if '__pycache__' not in p)


def test_wheel_ships_configs_tools_and_model_index(installed_wheel):
    mim = installed_wheel / 'mmrecprune' / '.mim'
    expected = (['model-index.yml'] + _repo_files('configs', ('py', 'yml'))
                + _repo_files('tools', ('py', 'sh')))
    assert 'configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py' in expected
    for rel in expected:
        path = mim / rel
        assert path.is_file() and not path.is_symlink(), f'{rel} missing from the wheel'
        assert path.read_bytes() == open(osp.join(REPO, rel), 'rb').read(), rel
    # the same set as MMDetection's: no READMEs, plots or caches
    shipped = sorted(osp.relpath(p, mim) for p in glob.glob(str(mim / '**' / '*'),
                                                             recursive=True) if osp.isfile(p))
    assert shipped == sorted(expected)
    # the compiled kernels' sources, which mmrecprune.ops builds on first use
    for rel in _repo_files('mmrecprune/ops/csrc', ('cpp', )):
        assert (installed_wheel / rel).read_bytes() == open(osp.join(REPO, rel), 'rb').read(), rel
    assert _repo_files('mmrecprune/ops/csrc', ('cpp', ))
    dist_info = glob.glob(str(installed_wheel / 'mmrecprune-*.dist-info'))
    assert len(dist_info) == 1
    assert glob.glob(osp.join(dist_info[0], '**', 'LICENSE'), recursive=True)
    requires = metadata.Distribution.at(dist_info[0]).requires
    expected = [str(r) for r in DEPENDENCIES] + [f'{r}; extra == "{extra}"'
                                                 for extra, reqs in EXTRAS.items() for r in reqs]
    assert sorted(str(Requirement(r)) for r in requires) == \
        sorted(str(Requirement(r)) for r in expected)


def test_mim_style_lookup_finds_the_configs(installed_wheel):
    """What ``mim`` / MMEngine do: find the installed package (``get_installed_path``), read
    ``.mim/model-index.yml`` and load the configs it lists (outside the repository)."""
    script = r'''
import os.path as osp, sys, yaml
from mmengine.config import Config
from mmengine.utils import get_installed_path
path = get_installed_path('mmrecprune')
assert osp.samefile(path, osp.join(sys.argv[1], 'mmrecprune')), path
mim = osp.join(path, '.mim')
configs = []
for rel in yaml.safe_load(open(osp.join(mim, 'model-index.yml')))['Import']:
    for model in yaml.safe_load(open(osp.join(mim, rel)))['Models']:
        Config.fromfile(osp.join(mim, model['Config']))  # with its _base_ files, from .mim
        configs.append(model['Config'])
print(len(configs))
'''
    env = dict(os.environ, PYTHONPATH=str(installed_wheel))
    result = subprocess.run([sys.executable, '-c', script, str(installed_wheel)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=str(installed_wheel))
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= len(glob.glob(osp.join(REPO, 'configs', '*',
                                                                    'metafile.yml')))


def test_makefile_has_check_env_and_the_script_reads_pyproject():
    makefile = open(osp.join(REPO, 'Makefile')).read()
    assert re.search(r'^check-env:', makefile, re.M)
    script = open(osp.join(REPO, 'tools', 'check_env.sh')).read()
    assert 'MMCV_WITH_OPS=1' in script and '--no-build-isolation' in script
    assert 'pyproject.toml' in script and '$PIP check' in script
