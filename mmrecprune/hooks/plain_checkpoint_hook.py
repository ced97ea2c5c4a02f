"""``mmrecprune.PlainCheckpointHook``: checkpoints that load with plain
``torch.load(weights_only=True)``, no allow-list."""
from mmengine.hooks import Hook

from mmrecprune.fileio import plain_checkpoint
from mmrecprune.registry import HOOKS


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Write every checkpoint as plain data (tensors, numbers, strings, containers).

    MMEngine pickles its message hub's ``HistoryBuffer`` objects and numpy values into each
    checkpoint, which a weights-only load refuses. Right before a checkpoint is saved, this
    hook rewrites them as tensors and numbers (see :func:`mmrecprune.fileio.plain_checkpoint`);
    the loader ``import mmrecprune`` registers turns them back into ``HistoryBuffer``s on
    ``--resume``, so a resumed run is unchanged. ``tools/train.py`` adds it to every run.

    It runs after every other hook's ``before_save_checkpoint`` (priority ``LOWEST``), so what
    they add (EMA weights, pruning state) is converted too.
    """
    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        plain_checkpoint(checkpoint, logger=runner.logger)


def with_plain_checkpoints(cfg):
    """Add :class:`PlainCheckpointHook` to ``cfg.custom_hooks`` unless it is there."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(str(h.get('type', '')).endswith('PlainCheckpointHook') for h in hooks):
        hooks.append(dict(type='mmrecprune.PlainCheckpointHook'))
    cfg.custom_hooks = hooks
    return cfg
