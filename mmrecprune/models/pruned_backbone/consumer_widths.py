"""The widths a ticket backbone outputs, and the check, at the first forward, that the neck
or head taking them expects those widths."""
import torch
from torch import nn

from mmrecprune.tickets import TicketError


def stage_widths(backbone):
    """Output channels of each stage in ``out_indices`` (what a neck's ``in_channels`` must be),
    from the last conv of every residual layer; None for a backbone of another shape."""
    layers = [getattr(backbone, name, None) for name in getattr(backbone, 'res_layers', [])]
    indices = getattr(backbone, 'out_indices', None)
    if not layers or indices is None or any(layer is None for layer in layers):
        return None
    widths = []
    for layer in layers:
        convs = [m for m in layer[-1].modules() if isinstance(m, nn.Conv2d)]
        widths.append(convs[-1].out_channels if convs else None)
    return [widths[i] for i in indices]


def _as_widths(value):
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def check_consumer_widths_once(backbone):
    """At the first forward, check that the module taking the backbone's outputs (the neck,
    or a decode head's first conv) expects their widths, and raise a :class:`TicketError`
    naming both instead of a raw conv shape error. A ticket pruned with ``prune_residual``, or
    one of another depth, changes the widths a neck's ``in_channels`` must list.

    The check is armed for one forward pass only: a global forward pre-hook, installed when
    the backbone returns, looks for the next module called with those outputs and is removed
    then, or when a ticket backbone runs again. The hooks are module-level functions and the
    flag lives on the backbone, so a deep copy (EMA, deployment) carries no shared state.
    """
    backbone._consumer_width_check = True
    backbone.register_forward_pre_hook(_disarm_width_check)
    backbone.register_forward_hook(_arm_width_check)


_ARMED_WIDTH_CHECKS = []  # handle of the global pre-hook while one is armed


def _disarm_width_check(*_):  # also a forward pre-hook: must return None
    while _ARMED_WIDTH_CHECKS:
        _ARMED_WIDTH_CHECKS.pop().remove()


def _arm_width_check(backbone, args, outputs):
    if not backbone.__dict__.get('_consumer_width_check'):
        return
    backbone._consumer_width_check = False
    feats = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    feats = [f for f in feats if torch.is_tensor(f) and f.dim() == 4]
    widths = [int(f.shape[1]) for f in feats]

    def before_consumer(consumer, cargs):
        first = cargs[0] if cargs else None
        if first is outputs:
            got = widths
        elif any(first is f for f in feats):
            got = int(first.shape[1])
        else:
            return
        expected = _as_widths(getattr(consumer, 'in_channels', None))
        if expected is None or type(expected) is not type(got):
            return  # a container or pooling layer: the check waits for the next module
        _disarm_width_check()
        if expected != got:
            raise TicketError(
                f'the ticket backbone outputs {widths} channels (out_indices '
                f'{list(getattr(backbone, "out_indices", []))}), but the '
                f'{type(consumer).__name__} that takes them expects in_channels {expected}; '
                f'set the neck\'s in_channels to {widths} (or the decode head\'s '
                'in_channels to the widths it reads), or use a ticket of the depth and widths '
                'this config was written for')

    _disarm_width_check()
    _ARMED_WIDTH_CHECKS.append(nn.modules.module.register_module_forward_pre_hook(
        before_consumer))
