"""Scoring a model before and after a pruning step without training: evaluation outside the
runner's loops (no hooks fire, so no "best" checkpoint is written for a variant), BN
recalibration, and the before / pruned / recovered table of retraining-free pruning."""
import copy

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def evaluate(model, dataloader, evaluator):
    """The metrics of ``model`` on ``dataloader`` (what MMEngine's ValLoop computes)."""
    was_training = model.training
    model.eval()
    for batch in dataloader:
        outputs = model.val_step(batch)
        evaluator.process(data_samples=outputs, data_batch=batch)
    metrics = evaluator.evaluate(len(dataloader.dataset))
    model.train(was_training)
    return metrics


@torch.no_grad()
def recalibrate_bn(model, dataloader, images):
    """Re-estimate every BatchNorm's running statistics on ``images`` training images, no
    weight update: statistics reset, then the exact average over the batches (``momentum=None``)
    of forward passes with only the norm layers in training mode. Returns the images seen."""
    if images <= 0:
        raise ValueError(f'BN recalibration needs images > 0, got {images}')
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise ValueError(f'{type(model).__name__} has no BatchNorm layer to recalibrate')
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        while seen < images:
            before = seen
            for batch in dataloader:
                data = model.data_preprocessor(batch, training=False)
                model(data['inputs'], data.get('data_samples'), mode='tensor')
                seen += len(data['inputs'])
                if seen >= images:
                    break
            if seen == before:
                raise ValueError('BN recalibration: the data loader gave no images')
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen


def score_pruning(pruner, score, recoveries, recalibrate=None, plan=None):
    """Score a retraining-free pruning step variant by variant, on an attached pruner that has
    not pruned yet (e.g. :class:`~mmrecprune.methods.OneShotMagnitudePruner`).

    Rows: ``'dense'`` (as given), ``'folded'`` (hyperspherical convs folded: must equal dense),
    then per recovery mode ``'<mode>'`` and, with ``recalibrate``, ``'<mode>+bn'``. The model
    ends in the state of the last mode of ``recoveries`` (recalibrated if asked).

    Args:
        pruner: The attached pruner.
        score (callable): ``score() -> dict`` of metrics of the pruner's model now.
        recoveries (Sequence[str]): Recovery modes to score (``'zero'``: right after pruning).
        recalibrate (callable, optional): Re-estimates the model's BN statistics in place.
        plan (callable, optional): ``plan() -> PruningPlan`` (the hooks pass rank 0's decision
            for DDP); default ``pruner.plan``.

    Returns:
        dict[str, dict]: The metrics by row.
    """
    rows = dict(dense=score())
    pruner.fold()
    rows['folded'] = score()
    decided = (plan or pruner.plan)()
    start = copy.deepcopy(pruner.model.state_dict())
    for i, mode in enumerate(recoveries):
        if i:
            pruner.model.load_state_dict(start)
        decided.info['recovery'] = mode
        pruner.commit(decided)
        rows[mode] = score()
        if recalibrate is not None:
            recalibrate()
            rows[f'{mode}+bn'] = score()
    return rows


def read_training_checkpoint(path):
    """The checkpoint ``path`` as data, with a state dict of tensors (a training checkpoint,
    or a bare state dict). Raises ValueError naming the problem (missing file, not a
    checkpoint, no tensors)."""
    import os.path as osp

    from mmrecprune.fileio import load_mmengine_checkpoint
    if not osp.isfile(path):
        raise ValueError(f'{path}: no such checkpoint file')
    try:
        ckpt = load_mmengine_checkpoint(path, map_location='cpu')
    except Exception as err:  # noqa: BLE001  not a checkpoint at all: say so, then stop
        raise ValueError(f'{path} is not a checkpoint this tool can read ({type(err).__name__}: '
                         f'{str(err)[:300]})') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(hasattr(v, 'shape') for v in state.values()):
        raise ValueError(f'{path} holds no state_dict of tensors: not a training checkpoint')
    return ckpt


def load_exact_weights(model, path, checkpoint=None):
    """Load the training checkpoint ``path`` (or its ``checkpoint``, read already by
    :func:`read_training_checkpoint`) into ``model``, requiring an exact fit; return the
    checkpoint. A torchvision-format state dict (``conv1.weight``, ``layer1.0...``, ``fc.*``) is
    mapped as ``load_from`` maps it (``backbone.*``, ``fc`` -> ``head.fc``). Raises ValueError
    naming the problem (missing file, not a checkpoint, no tensors, another architecture or
    width)."""
    from mmrecprune.models.starting_weights import map_torchvision_keys
    from mmrecprune.models.strict_pretrained import misfit
    ckpt = read_training_checkpoint(path) if checkpoint is None else checkpoint
    state = ckpt.get('state_dict', ckpt)
    own = model.state_dict()
    mapped = map_torchvision_keys(own, state)
    if mapped is not None:
        problem = misfit(own, mapped)
        if problem:
            raise ValueError(
                f'{path} is a torchvision-format state dict (conv1.weight, layer1.0..., fc.*); '
                'mapped as load_from maps it (backbone.*, fc -> head.fc) it does not fit the '
                f'model of the config (another architecture, width or number of classes?): '
                f'{problem}. Check it with tools/model_converters/starting_weights.py SRC DST '
                '--config CONFIG, train with load_from=DST, and give that checkpoint.')
        state = mapped
    else:
        problem = misfit(own, state)
        if problem:
            raise ValueError(f'{path} does not fit the model of the config (another '
                             f'architecture or width?): {problem}. Pass the config the '
                             'checkpoint was trained with.')
    model.load_state_dict({k: v for k, v in state.items() if hasattr(v, 'shape')}, strict=False)
    return ckpt


def offline_runner(cfg):
    """A runner of ``cfg`` for tools that score a given checkpoint: no training hooks (they
    would attach their own pruner), nothing loaded or resumed by the runner itself."""
    from mmengine.runner import Runner
    cfg.custom_hooks = []
    cfg.load_from = None
    cfg.resume = False
    return Runner.from_cfg(cfg)


def validation_scorer(runner, cfg):
    """``score() -> metrics`` of the runner's model on ``cfg.val_dataloader`` (loader and
    evaluator built once)."""
    loader = runner.build_dataloader(cfg.val_dataloader)
    evaluator = runner.build_evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
    return lambda: evaluate(runner.model, loader, evaluator)
