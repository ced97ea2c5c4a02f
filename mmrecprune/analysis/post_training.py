"""What ``tools/prune_post_training.py`` and its benchmark share: calibration images drawn
from the train split, scoring on the test split, progress bars over the calibration passes.
(The slim model and its config are written by
:func:`mmrecprune.models.slim_task_model.write_task_model`, as in-task pruning writes them.)"""
import argparse
import copy
import random

import numpy as np
import torch

from .pruned_evaluation import evaluate


def calibration_batches(runner, cfg, images, seed=0, batch_size=None):
    """``images`` preprocessed inputs of the train split (a seeded random sample, the train
    pipeline with its random transforms seeded too, the model's data preprocessor in test
    mode), as a list of input tensors.

    Raises:
        ValueError: If ``images`` < 1 or the train split has fewer images.
    """
    from torch.utils.data import DataLoader, Subset
    if images < 1:
        raise ValueError(f'--calibration-images must be >= 1, got {images}')
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    batch_size = batch_size or loader_cfg.get('batch_size', 32)
    loader = runner.build_dataloader(loader_cfg)
    dataset = loader.dataset
    if len(dataset) < images:
        raise ValueError(f'--calibration-images {images}: the train split has only '
                         f'{len(dataset)} images')
    index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images]
    subset = DataLoader(Subset(dataset, index.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=0, collate_fn=loader.collate_fn)
    model = runner.model
    batches = []
    # the train pipeline's random transforms (flips) draw from Python's and NumPy's global
    # generators: seeded here (and put back after) so that a seed is one calibration set
    states = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        with torch.no_grad():
            for batch in subset:
                batches.append(model.data_preprocessor(batch, training=False)['inputs'])
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return batches


def test_scorer(runner, cfg, max_images=None):
    """``score(model) -> metrics`` on ``cfg.test_dataloader`` (its first ``max_images``
    images if given), loader and evaluator built once; ``score.dataset_meta`` is the test
    set's metainfo (class names)."""
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    if max_images:
        loader_cfg.dataset['indices'] = int(max_images)
    loader = runner.build_dataloader(loader_cfg)
    evaluator = runner.build_evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)

    def score(model):
        return evaluate(model, loader, evaluator)

    score.dataset_meta = evaluator.dataset_meta
    return score


class CalibrationProgress:
    """One MMEngine progress bar over ``passes`` calibration passes of ``images`` images
    (called with the images of every batch done)."""

    def __init__(self, passes, images):
        from mmengine.utils import ProgressBar
        self.total = max(1, passes * images)
        self.bar = ProgressBar(self.total)
        self.done = 0

    def __call__(self, images):
        self.done += images
        self.bar.update(images)


def ridge_arg(value):
    """argparse type of the tools' ``--ridge``: ``'auto'`` or a number >= 0."""
    if value == 'auto':
        return value
    try:
        ridge = float(value)
    except ValueError:
        ridge = -1.0
    if not ridge >= 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number >= 0, got {value!r}")
    return ridge
