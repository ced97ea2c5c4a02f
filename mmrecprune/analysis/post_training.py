"""What ``tools/prune_post_training.py`` and its benchmark share: calibration images drawn
from the train split, scoring on the test split, progress bars over the calibration passes,
and the slim model as a downstream user gets it (``PrunedBackbone`` built from the ticket)."""
import copy

import torch

from .pruned_evaluation import evaluate


def calibration_batches(runner, cfg, images, seed=0, batch_size=None):
    """``images`` preprocessed inputs of the train split (a seeded random sample, the train
    pipeline, the model's data preprocessor in test mode), as a list of input tensors.

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
    with torch.no_grad():
        for batch in subset:
            batches.append(model.data_preprocessor(batch, training=False)['inputs'])
    return batches


def test_scorer(runner, cfg, max_images=None):
    """``score(model) -> metrics`` on ``cfg.test_dataloader`` (its first ``max_images``
    images if given), loader and evaluator built once."""
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    if max_images:
        loader_cfg.dataset['indices'] = int(max_images)
    loader = runner.build_dataloader(loader_cfg)
    evaluator = runner.build_evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
    return lambda model: evaluate(model, loader, evaluator)


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


def slim_downstream_model(cfg, ticket_path, pruned_model):
    """The model of ``cfg`` with its backbone replaced by ``mmrecprune.PrunedBackbone`` on
    ``ticket_path`` (behaviour keys kept from the config), carrying ``pruned_model``'s
    non-backbone weights: the slim model as a downstream config builds it (the behaviour
    keys but ``norm_cfg``, which the ticket holds). Returns the model
    and its model config."""
    from mmengine.registry import DefaultScope

    from mmrecprune.models.pruned_backbone import BEHAVIOUR_KEYS
    from mmrecprune.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    backbone = model_cfg.backbone
    # norm_cfg is in the ticket already (and a config's dict reaches the backbone as a
    # ConfigDict, which the ticket schema's check refuses)
    model_cfg.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=ticket_path,
                              **{k: backbone[k] for k in BEHAVIOUR_KEYS
                                 if k in backbone and k != 'norm_cfg'})
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrecprune')):
        model = MODELS.build(model_cfg)
    rest = {k: v for k, v in pruned_model.state_dict().items() if not k.startswith('backbone.')}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected or any(not k.startswith('backbone.') for k in missing):
        raise RuntimeError(f'the slim model does not take the pruned weights: missing '
                           f'{missing[:4]}, unexpected {unexpected[:4]}')
    return model.to(next(pruned_model.parameters()).device), model_cfg
