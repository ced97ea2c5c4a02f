"""The backbone of a loaded ticket: built from its config and the downstream options, given
its channel structure and weights (strictly), its stages frozen again, its masks held, and
the ticket header attached for the model's checkpoints."""
from mmengine.logging import print_log

from mmrecprune.sparsity import apply_channel_structure, freeze_masks
from mmrecprune.ticket_schema import build_ticket_backbone
from mmrecprune.tickets import TicketError, clean_backbone_cfg, plain_values
from .carried_ticket import attach_ticket_state, ticket_header
from .consumer_widths import check_consumer_widths_once, stage_widths

#: mmseg's ResNet takes ``contract_dilation`` (its dilated V1c configs set it); mmdet's does not.
#: Both name their weights alike, so the ticket's mmdet type is built as mmseg's twin.
_MMSEG_TWINS = {'mmdet.ResNet': 'mmseg.ResNet', 'ResNet': 'mmseg.ResNet',
                'mmdet.ResNetV1d': 'mmseg.ResNetV1d', 'ResNetV1d': 'mmseg.ResNetV1d'}


def assemble_backbone(ticket, keep_masks, behaviour, attach=True, quiet=False,
                      semi_structured=False):
    """The backbone of ``ticket`` (a :class:`~mmrecprune.tickets.Ticket`) with the config
    options ``behaviour``; its masks frozen if ``keep_masks``; the ticket header attached to
    its state_dict if ``attach``; logged unless ``quiet``."""
    cfg = clean_backbone_cfg(ticket.backbone_cfg)
    # plain values: a config file's norm_cfg is a ConfigDict, which the schema refuses
    cfg.update({k: plain_values(v) for k, v in behaviour.items() if v is not None})
    if 'contract_dilation' in cfg and not cfg['type'].startswith('mmseg.'):  # mmseg's take it
        if cfg['type'] not in _MMSEG_TWINS:
            raise TicketError(f'contract_dilation applies to ResNet tickets (built as mmseg\'s '
                              f'ResNet); this ticket\'s backbone is {cfg["type"]!r}: remove '
                              'contract_dilation from model.backbone')
        cfg['type'] = _MMSEG_TWINS[cfg['type']]
        # mmseg's stem defaults to 64 channels whatever base_channels is; mmdet's follows it
        cfg.setdefault('stem_channels', cfg.get('base_channels', 64))
    backbone = build_ticket_backbone(cfg)
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
    masks = ticket.masks if keep_masks else {}
    if masks:
        params = dict(backbone.named_parameters())
        freeze_masks({n: params[n] for n in masks}, masks, ticket.fill_values, owner=backbone)
    if semi_structured:
        _enable_semi_structured(backbone, ticket, masks)
    # The weights come from the ticket: the runner's init_weights() must not re-initialise them.
    backbone._is_init = True
    if attach:
        attach_ticket_state(backbone, ticket_header(ticket, masks))
    if quiet:
        return backbone
    check_consumer_widths_once(backbone)
    meta, step = ticket.meta, ticket.step
    transfer = meta.get('transfer')
    print_log(f'PrunedBackbone: {meta["kind"]} ticket from {meta.get("method", "?")} '
              f'(step {"-" if step is None else step}, sparsity {meta.get("sparsity", 0):.3f}), '
              f'stage widths {stage_widths(backbone)}'
              + (f', weights {transfer["weights"]!r}, masks {transfer["masks"]!r}, seed '
                 f'{transfer["seed"]}' if transfer else ''), logger='current')
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


def _enable_semi_structured(backbone, ticket, masks):
    """Turn the ticket's 2:4 1x1 convs into sparse-capable convs; log which."""
    from mmrecprune.sparsity import SEMI_STRUCTURED_PATTERN, enable_semi_structured
    if ticket.kind != 'nm' or ticket.meta.get('pattern') != SEMI_STRUCTURED_PATTERN:
        raise TicketError(f'PrunedBackbone semi_structured=True needs an nm ticket of pattern '
                          f'{SEMI_STRUCTURED_PATTERN!r} (the one the hardware runs); this one '
                          f'is {ticket.kind}' + (f' of pattern {ticket.meta["pattern"]!r}'
                                                 if ticket.meta.get('pattern') else ''))
    report = enable_semi_structured(backbone, masks)
    sparse = [n for n, r in report.items() if r == 'sparse']
    print_log(f'PrunedBackbone: {len(sparse)} of {len(report)} convs run as semi-structured '
              'sparse products in CUDA half-precision inference (1x1, 2:4 along the input '
              'channels); the others run dense with the mask', logger='current')
    return report
