# The two commands of the README. Both install what they need (a virtualenv in .venv) first;
# re-running skips what is already installed or already computed.
PY := .venv/bin/python

.PHONY: setup demo test scenes check-env
setup:
	bash tools/setup_env.sh

scenes: setup
	$(PY) tools/dataset_converters/make_fashion_scenes.py --out-dir data/fashion_scenes

demo: setup
	$(PY) tools/run_embedded_default.py

# Two worker processes, whole modules each (module fixtures are built once); the slowest
# modules start first (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Not part of `make test` / CI: a second venv at the oldest versions pyproject.toml declares,
# installed as a GPU user would (mmcv built against that torch), then the test suite there.
check-env:
	bash tools/check_env.sh
