"""The backbone of a loaded ticket: built from its config and the downstream options, given
its channel structure and weights (strictly), its stages frozen again, its masks held, and
the ticket header attached for the model's checkpoints."""
import itertools

import torch
from mmengine.logging import print_log

from mmrecprune.sparsity import apply_channel_structure, freeze_masks
from mmrecprune.ticket_schema import build_ticket_backbone, check_state_dict
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
    backbone = _build_fitting(cfg, ticket)
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


#: a dense backbone up to this many times the ticket's weight bytes (or _DENSE_ALWAYS bytes) is
#: built as a plain build would build it; structured tickets keep 1/2 to 1/16 of their dense
#: weights, a crafted one may keep 1/100,000
_DENSE_PER_TICKET, _DENSE_ALWAYS = 64, 256 * 2 ** 20


def _build_fitting(cfg, ticket):
    """The backbone of ``cfg`` in the ticket's channel structure, holding the ticket's weights.

    The config alone may describe a model of hundreds of GB (depth 152, base_channels 4096 are
    in the schema's ranges) in a file of a few KB. So the backbone is first built on the meta
    device (shapes only, no memory) and its state_dict compared with the ticket's tensors,
    names and shapes. Only a ticket whose weights are all there, each of its shape, is built:
    as a plain build does (the dense backbone initialised, then slimmed: the same random
    numbers drawn, so a seeded run gives what it gave before this check) where the dense
    backbone takes at most 64x the ticket's weight bytes (or 256 MB); past that, with exactly
    the ticket's shapes (``to_empty``: the dense model is never allocated, and no random
    number drawn), every entry filled from the ticket. What is built is thus bounded by the
    tensors the file holds."""
    check_state_dict(ticket.state_dict, 'ticket')
    backbone = build_ticket_backbone(cfg, device='meta')
    dense_bytes = state_dict_bytes(backbone.state_dict())
    _apply_structure(backbone, ticket, cfg)  # reshaped layers get meta tensors too
    _check_fits(backbone, ticket.state_dict, cfg)
    held_bytes = state_dict_bytes(ticket.state_dict)
    if dense_bytes <= max(_DENSE_PER_TICKET * held_bytes, _DENSE_ALWAYS):
        backbone = build_ticket_backbone(cfg)
        _apply_structure(backbone, ticket, cfg)
    else:
        # to_empty leaves memory uninitialised: every tensor must come from the ticket
        own = backbone.state_dict(keep_vars=True)
        untracked = [n for n, _ in itertools.chain(backbone.named_parameters(),
                                                    backbone.named_buffers()) if n not in own]
        if untracked:
            raise TicketError(f'{cfg["type"]} holds tensors outside its state_dict '
                              f'({untracked[:5]}), which a ticket cannot restore; it cannot be '
                              'built from a ticket')
        backbone.to_empty(device=_default_device())
    backbone.load_state_dict(ticket.state_dict, strict=True)
    return backbone


def state_dict_bytes(state_dict):
    """The bytes of a state_dict's tensors (meta tensors too: their would-be size)."""
    return sum(t.numel() * t.element_size() for t in state_dict.values())


def _apply_structure(backbone, ticket, cfg):
    if ticket.channel_structure:
        try:
            apply_channel_structure(backbone, ticket.channel_structure)
        except (ValueError, TypeError, KeyError) as err:
            raise TicketError(f'ticket channel_structure does not fit the backbone built from '
                              f'its config ({cfg.get("type")}): {err}') from None


def _default_device():
    """Where a plain build would have put the backbone (``torch.get_default_device`` is
    torch >= 2.3; the project supports 2.0, whose default device is the CPU's)."""
    get = getattr(torch, 'get_default_device', None)
    return get() if get is not None else torch.device('cpu')


def _check_fits(module, state_dict, cfg):
    """Raise TicketError unless ``state_dict`` has exactly ``module``'s entries and shapes
    (``module`` on the meta device: nothing is allocated)."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    if missing or unexpected:
        numel = sum(v.numel() for v in own.values())
        held = sum(v.numel() for v in state_dict.values())
        raise TicketError(
            f'ticket weights do not fit the backbone built from its config ({_shown_cfg(cfg)}: '
            f'{len(own)} tensors, {numel:,} values; the ticket holds {len(state_dict)} '
            f'tensors, {held:,} values): missing {missing[:5]}, unexpected {unexpected[:5]}. '
            'Nothing was built: the ticket\'s config and weights describe different backbones '
            '(a corrupted or edited file); export the ticket again from the pruning run')
    for name, value in state_dict.items():
        if own[name].shape != value.shape:
            raise TicketError(
                f'ticket weight {name!r} has shape {tuple(value.shape)}, the backbone built '
                f'from its config ({_shown_cfg(cfg)}) expects {tuple(own[name].shape)}: the '
                'ticket was made for another architecture or width, or edited; nothing was '
                'built. Export the ticket again from the pruning run')


def _shown_cfg(cfg):
    return ', '.join(f'{k}={cfg[k]!r}' for k in (
        'type', 'depth', 'base_channels', 'stem_channels', 'widen_factor') if k in cfg)


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
