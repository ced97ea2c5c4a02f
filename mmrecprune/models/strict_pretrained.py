"""``init_cfg=dict(type='mmrecprune.StrictPretrained', ...)``: ``Pretrained`` that refuses a
checkpoint that does not fit instead of logging a warning and training from random weights."""
from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint

from mmrecprune.registry import WEIGHT_INITIALIZERS
from mmrecprune.tickets import without_ticket_header


def compare_state_dicts(own, state):
    """How ``state`` (a checkpoint's) fails to fit ``own`` (a module's), tensors only.

    Returns:
        tuple[list[str], list[str], list[str]]: keys of ``own`` missing from ``state`` (BN
        ``num_batches_tracked`` counters excepted), keys of ``state`` that ``own`` lacks, and
        ``'key: checkpoint (shape) vs model (shape)'`` for every shape mismatch; all sorted.
    """
    own, state = without_ticket_header(own), without_ticket_header(state)
    missing = sorted(k for k in set(own) - set(state) if not k.endswith('num_batches_tracked'))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                        for k in set(own) & set(state) if state[k].shape != own[k].shape)
    return missing, unexpected, mismatched


def misfit(own, state):
    """None if ``state`` fits ``own`` exactly (see :func:`compare_state_dicts`), else how it
    does not, in one sentence naming the first keys of each kind."""
    missing, unexpected, mismatched = compare_state_dicts(own, state)
    if not (missing or unexpected or mismatched):
        return None
    return (f'{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys '
            f'{unexpected[:3]}, {len(mismatched)} shape mismatches {mismatched[:3]}')


@WEIGHT_INITIALIZERS.register_module()
class StrictPretrained(PretrainedInit):
    """Load ``checkpoint`` (keys under ``prefix``) and require an exact fit.

    Every weight and buffer of the module must be in the checkpoint with the same shape, except
    BN's ``num_batches_tracked`` counters (torchvision checkpoints omit them; they only matter
    for ``momentum=None``). Checkpoint entries the module does not have are refused unless
    ``ignore_keys`` names them: for a torchvision-style classifier state_dict (``conv1.weight``,
    ..., ``fc.*``) loaded as a backbone, ``prefix=None, ignore_keys=('fc.',)``.

    Args:
        checkpoint (str): checkpoint path, e.g. a classifier trained by ``tools/train.py``.
        prefix (str, optional): key prefix to take and strip, e.g. ``'backbone.'``.
        ignore_keys (Sequence[str]): key prefixes (after stripping ``prefix``) of checkpoint
            entries to leave out, e.g. a classifier's ``('fc.',)``. Defaults to ().
        map_location (str): device to load to. Defaults to ``'cpu'``.
    """

    def __init__(self, checkpoint, prefix=None, ignore_keys=(), map_location='cpu'):
        if isinstance(ignore_keys, str):
            ignore_keys = (ignore_keys, )
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        self.ignore_keys = tuple(ignore_keys)

    def __call__(self, module):
        ckpt = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f'{self.checkpoint!r} holds no state_dict')
        if self.prefix:
            state = {k[len(self.prefix):]: v for k, v in state.items()
                     if k.startswith(self.prefix)}
            if not state:
                raise ValueError(f'{self.checkpoint!r} has no weights under prefix '
                                 f'{self.prefix!r}; check `prefix` in init_cfg')
        state = {k: v for k, v in without_ticket_header(state).items()
                 if not k.startswith(self.ignore_keys)}
        problem = misfit(module.state_dict(), state)
        if problem:
            raise ValueError(
                f'checkpoint {self.checkpoint!r} does not fit {type(module).__name__}: '
                f'{problem}. Was it '
                'trained with the same depth / base_channels? Entries to leave out (a '
                'classifier\'s fc.*) go into ignore_keys; a pruned ticket goes into '
                'type="mmrecprune.PrunedBackbone" instead.')
        module.load_state_dict(state, strict=False)  # all fits but num_batches_tracked

    def _get_init_info(self):
        return f'{self.__class__.__name__}: load from {self.checkpoint}'
