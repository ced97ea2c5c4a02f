"""Train a model from an OpenMMLab config (same arguments as MMDetection's tools/train.py).

The command is :func:`mmrecprune.training.main`."""
import sys

from mmrecprune.cli import run_tool
from mmrecprune.training import main

if __name__ == '__main__':
    sys.exit(run_tool(main))
