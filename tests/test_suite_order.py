"""The module order `make test` starts with (tests/conftest.py) names modules that exist."""
import os.path as osp

from tests.conftest import REPO, SLOWEST_FIRST


def test_the_slowest_modules_listed_first_exist():
    missing = [path for path in SLOWEST_FIRST if not osp.isfile(osp.join(REPO, path))]
    assert not missing, f'{missing}: renamed or removed; update SLOWEST_FIRST in tests/conftest.py'


def test_collection_puts_them_first(request):
    order = []
    for item in request.session.items:
        path = item.nodeid.split('::')[0]
        if not order or order[-1] != path:
            order.append(path)
    listed = [path for path in order if path in SLOWEST_FIRST]
    assert order[:len(listed)] == listed, order[:len(SLOWEST_FIRST) + 1]
