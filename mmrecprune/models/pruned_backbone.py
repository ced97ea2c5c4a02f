"""``mmrecprune.PrunedBackbone``: the backbone of a ticket, inside any mmdet / mmseg config."""
import copy

from mmengine.logging import print_log

from mmrecprune.registry import MODELS
from mmrecprune.sparsity import apply_channel_structure, freeze_masks
from mmrecprune.tickets import TicketError, load_ticket

#: Options a downstream config may set; everything that defines the structure (depth, widths,
#: stem) comes from the ticket.
BEHAVIOUR_KEYS = ('out_indices', 'frozen_stages', 'norm_cfg', 'norm_eval', 'strides',
                  'dilations', 'with_cp', 'style', 'contract_dilation')


def build_backbone_from_ticket(ticket, keep_masks=True, **behaviour):
    """Build the ticket's backbone, load its weights, and keep its masks fixed if asked.

    Args:
        ticket (str | Ticket): path of a ticket file, or a loaded ticket.
        keep_masks (bool): unstructured tickets only: keep pruned weights at zero during
            fine-tuning. Defaults to True.
        **behaviour: any of :data:`BEHAVIOUR_KEYS`, e.g. ``out_indices=(0, 1, 2, 3)``,
            ``frozen_stages=1``, ``norm_eval=True``, and for segmentation
            ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)``.
    """
    unknown = sorted(set(behaviour) - set(BEHAVIOUR_KEYS))
    if unknown:
        raise TicketError(f'PrunedBackbone got options {unknown} it cannot apply; allowed are '
                          f'{list(BEHAVIOUR_KEYS)} (structure comes from the ticket)')
    if isinstance(ticket, str):
        ticket = load_ticket(ticket)
    cfg = copy.deepcopy(ticket.backbone_cfg)
    cfg.update({k: v for k, v in behaviour.items() if v is not None})
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    backbone = MODELS.build(cfg)
    if ticket.channel_structure:
        try:
            apply_channel_structure(backbone, ticket.channel_structure)
        except (ValueError, TypeError, KeyError) as err:
            raise TicketError(f'ticket channel_structure does not fit the backbone built from '
                              f'its config ({cfg.get("type")}): {err}') from None
    missing, unexpected = _load_strict(backbone, ticket.state_dict)
    if missing or unexpected:
        raise TicketError(f'ticket weights do not fit the backbone built from its config '
                          f'({cfg.get("type")}): missing {missing[:5]}, unexpected '
                          f'{unexpected[:5]}')
    if hasattr(backbone, '_freeze_stages'):
        backbone._freeze_stages()  # modules replaced by the channel structure must freeze too
    if ticket.masks and keep_masks:
        params = dict(backbone.named_parameters())
        freeze_masks({n: params[n] for n in ticket.masks}, ticket.masks)
    # The weights come from the ticket: the runner's init_weights() must not re-initialise them.
    backbone._is_init = True
    meta = ticket.meta
    print_log(f'PrunedBackbone: {meta["kind"]} ticket from {meta.get("method", "?")} '
              f'(round {meta.get("round", "-")}, sparsity {meta.get("sparsity", 0):.3f})',
              logger='current')
    return backbone


def _load_strict(module, state_dict):
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    if missing or unexpected:
        return missing, unexpected
    for name, value in state_dict.items():
        if own[name].shape != value.shape:
            raise TicketError(f'ticket weight {name!r} has shape {tuple(value.shape)}, the '
                              f'backbone expects {tuple(own[name].shape)}: the ticket was '
                              'made for another architecture or width')
    module.load_state_dict(state_dict, strict=True)
    return [], []


MODELS.register_module(name='PrunedBackbone', module=build_backbone_from_ticket)
