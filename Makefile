# The two commands of the README. Both install what they need (a virtualenv in .venv) first;
# re-running skips what is already installed or already computed.
PY := .venv/bin/python

.PHONY: setup demo test scenes
setup:
	bash tools/setup_env.sh

scenes: setup
	$(PY) tools/dataset_converters/make_fashion_scenes.py --out data/fashion_scenes

demo: setup
	$(PY) tools/run_embedded_default.py

test: setup
	$(PY) -m pytest tests
