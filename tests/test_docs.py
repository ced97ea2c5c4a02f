"""docs/en, README.md and CHANGELOG.md stay true: links (and their #anchors) resolve, every
command names scripts and configs that exist, and each Python tool it calls accepts its
arguments (``--help`` runs); the runs themselves are covered by the tests of each tool (the
README's quickstart: tests/e2e/test_readme_quickstart.py). The README stays a front door of at
most 10 KB."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

DOCS = sorted(glob.glob(osp.join(REPO, 'docs', 'en', '**', '*.md'), recursive=True)) + [
    osp.join(REPO, 'README.md'), osp.join(REPO, 'CHANGELOG.md')]
README_MAX_BYTES = 10240


def _anchors(path):
    """GitHub's anchors of the headings of a Markdown file."""
    text = re.sub(r'```.*?```', '', open(path).read(), flags=re.S)
    return {re.sub(r'[^\w\- ]', '', title.strip().lower()).replace(' ', '-')
            for title in re.findall(r'^#+ (.+)$', text, re.M)}


def _commands(path):
    text = open(path).read()
    blocks = re.findall(r'```bash\n(.*?)```', text, re.S)
    return [line.split('#')[0].strip() for block in blocks
            for line in block.replace('\\\n', ' ').splitlines() if line.split('#')[0].strip()]


def test_docs_exist():
    names = {osp.relpath(p, osp.join(REPO, 'docs', 'en')) for p in DOCS}
    assert {'index.md', 'get_started.md', 'main_job.md', 'leaderboard.md', 'layout.md',
            'advanced_guides/add_a_method.md', 'advanced_guides/add_a_criterion.md',
            'user_guides/safe_loading.md', 'user_guides/deploy.md',
            'user_guides/use_a_ticket.md', 'user_guides/prune_your_backbone.md',
            'user_guides/resume_and_ddp.md', 'user_guides/analysis_plots.md',
            'user_guides/model_zoo.md', 'user_guides/benchmarks.md', 'methods/recprune.md',
            'methods/imp.md', 'methods/psap.md', 'methods/l1.md', 'methods/selfsup.md',
            'methods/onthefly.md'} <= names


def test_readme_is_a_front_door():
    assert os.path.getsize(osp.join(REPO, 'README.md')) <= README_MAX_BYTES


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, REPO))
def test_links_resolve(path):
    for target, anchor in re.findall(r'\]\(([^)#\s]*)(?:#([^)\s]*))?\)', open(path).read()):
        if '://' in target:
            continue
        linked = osp.join(osp.dirname(path), target) if target else path
        assert osp.exists(linked), f'{path}: broken link {target}'
        if anchor and linked.endswith('.md'):
            assert anchor in _anchors(linked), f'{path}: no heading for {target}#{anchor}'


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, REPO))
def test_commands_name_existing_scripts_and_configs(path):
    for command in _commands(path):
        for ref in re.findall(r'(?:tools|configs)/[\w./-]+\.(?:py|sh)', command):
            assert osp.isfile(osp.join(REPO, ref)), f'{path}: {command!r} names missing {ref}'
        if command.startswith('make '):
            assert re.search(rf'^{command.split()[1]}:', open(osp.join(REPO, 'Makefile')).read(),
                             re.M), command


def _tools():
    found = set()
    for path in DOCS:
        for command in _commands(path):
            found.update(re.findall(r'python (tools/[\w./-]+\.py)', command))
    return sorted(found)


@pytest.mark.parametrize('tool', _tools())
def test_each_documented_tool_parses_its_arguments(tool):
    result = subprocess.run([sys.executable, tool, '--help'], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and 'usage' in result.stdout.lower(), result.stderr[-1500:]
