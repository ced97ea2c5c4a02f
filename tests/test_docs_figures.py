"""One home per figure: a figure quoted on a page other than its home must be the home's
figure, character for character, so no page keeps a value its home has since replaced.

- Spread figures (``mean +- std``) live in the leaderboard's tables (docs/en/leaderboard.md,
  resources/leaderboard.md) or in a method's README (configs/*/README.md); any other page that
  quotes one must quote a string that appears in a home.
- Named figures that several pages state (the test suite's count and time, the main job's wall
  time) must have one value wherever they appear.

CHANGELOG.md is history and is not checked.
"""
import glob
import os.path as osp
import re

import pytest

from tests.conftest import REPO

HOMES = ['docs/en/leaderboard.md', 'resources/leaderboard.md', *sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '*', 'README.md')))]
PAGES = ['README.md', *sorted(osp.relpath(p, REPO) for p in glob.glob(
    osp.join(REPO, 'docs', '**', '*.md'), recursive=True))]
SPREAD = re.compile(r'[+-]?\d+(?:\.\d+)? \+- \d+(?:\.\d+)?')
#: name -> a pattern whose group 1 is the figure
NAMED = {
    'make test result': re.compile(r'(\d+ passed, \d+ skipped)(?:,)? in [\d.]+ min'),
    'make test time': re.compile(r'\d+ passed, \d+ skipped,? in ([\d.]+ min)'),
    # README's make-demo paragraph and the main job's page
    'make demo wall time': re.compile(r'It took \*\*([\d.]+ min)\*\*|([\d.]+ min) for the whole '
                                      r'job|Wall time\.\*\* ([\d.]+ min) for the run above'),
}


def _read(path):
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        return f.read()


def _spread_figures(text):
    return set(SPREAD.findall(text))


@pytest.mark.parametrize('page', [p for p in PAGES if p not in HOMES])
def test_quoted_spread_figures_are_their_homes(page):
    homes = set().union(*(_spread_figures(_read(h)) for h in HOMES))
    orphans = sorted(_spread_figures(_read(page)) - homes)
    assert not orphans, (f'{page} quotes figures that no home (leaderboard tables, method '
                         f'READMEs) has: {orphans}; copy them from the home again or link it')


@pytest.mark.parametrize('name', sorted(NAMED))
def test_named_figures_have_one_value(name):
    values = {}
    for page in PAGES + [h for h in HOMES if h not in PAGES]:
        for match in NAMED[name].finditer(_read(page)):
            value = next(group for group in match.groups() if group)
            values.setdefault(value, []).append(page)
    assert len(values) <= 1, f'{name} has several values: {values}'


def test_the_checks_catch_a_stale_quote(tmp_path):
    """The patterns find what they are meant to find (a test that cannot fail is no test)."""
    homes = _spread_figures(_read('docs/en/leaderboard.md'))
    stale = '+23.25 +- 3.68'  # one digit off a leaderboard cell
    assert '+23.25 +- 3.67' in homes and stale not in homes
    assert _spread_figures(f'linear probe {stale} (3/3)') == {stale}
    demo = NAMED['make demo wall time']
    assert [m.group(3) for m in demo.finditer('**Wall time.** 43.3 min for the run above')] == [
        '43.3 min']
    assert NAMED['make test result'].findall('794 passed, 2 skipped in 13.4 min') == [
        '794 passed, 2 skipped']
