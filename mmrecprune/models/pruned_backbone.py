"""``mmrecprune.PrunedBackbone``: the backbone of a ticket, inside any mmdet / mmseg config.

Structure (widths, masks) and weights come from the ticket; behaviour (out_indices, frozen
stages, norm config, strides / dilations) from the config. The built backbone is the ticket's
own registered type (e.g. ``mmdet.ResNet``), so state_dict keys are those of a dense backbone.

A model trained on a ticket carries the ticket's structure in its own checkpoint: the backbone
adds one entry, ``<prefix>ticket``, to its state_dict: a uint8 tensor holding the ticket header
(meta, channel structure, packed masks) as ``torch.save`` bytes of plain data, so every
state_dict entry is a tensor (EMA, averaging and conversion tools assume it). Reading it back
goes through the same reader and schema as a ticket file. When the ticket file named in the config is gone (the detector was copied to
another machine), the backbone is built lazily from that entry while the checkpoint loads, so
``init_detector``, ``DetInferencer``, ``tools/test.py`` and mmseg's ``init_model`` work with the
checkpoint alone.
"""
import copy
import logging
import os.path as osp

import torch
from mmengine.logging import print_log
from torch import nn

from mmrecprune.registry import MODELS
from mmrecprune.sparsity import apply_channel_structure, freeze_masks, pack_mask
from mmrecprune.ticket_schema import build_ticket_backbone, check_ticket_header
from mmrecprune.tickets import (TICKET_STATE_KEY, Ticket, TicketError, clean_backbone_cfg,
                                load_ticket, plain_values, read_ticket_bytes, ticket_bytes,
                                validate_ticket)

#: Options a downstream config may set; everything that defines the structure (depth, widths,
#: stem) comes from the ticket.
BEHAVIOUR_KEYS = ('out_indices', 'frozen_stages', 'norm_cfg', 'norm_eval', 'strides',
                  'dilations', 'with_cp', 'style', 'contract_dilation')
#: Set by shipped configs (mmseg pushes its model-level ``pretrained`` into the backbone); a
#: ticket holds its weights, so these are accepted and ignored with a log line.
IGNORED_KEYS = ('pretrained', 'init_cfg')
#: mmseg's ResNet takes ``contract_dilation`` (its dilated V1c configs set it); mmdet's does not.
#: Both name their weights alike, so the ticket's mmdet type is built as mmseg's twin.
_MMSEG_TWINS = {'mmdet.ResNet': 'mmseg.ResNet', 'ResNet': 'mmseg.ResNet',
                'mmdet.ResNetV1d': 'mmseg.ResNetV1d', 'ResNetV1d': 'mmseg.ResNetV1d'}


def build_backbone_from_ticket(ticket=None, keep_masks=True, weights='ticket', masks='ticket',
                               seed=0, semi_structured=False, **options):
    """Build the ticket's backbone, load its weights, and keep its masks fixed if asked.

    Args:
        ticket (str | Ticket): path of a ticket file, or a loaded ticket. If the file does not
            exist, the backbone is built from the checkpoint that is loaded into the model
            (a model trained on the ticket holds it); using the model before that is an error.
        keep_masks (bool): unstructured and nm tickets only: keep pruned weights at zero (or
            their fill values) during fine-tuning. Defaults to True.
        weights (str): mask transfer: ``'ticket'`` (its weights), ``'random'`` (the backbone's
            own random initialisation with ``seed``, pruned entries zeroed) or the path of a
            checkpoint whose ``backbone.*`` weights of the ticket's shapes start the run (e.g. the
            rewind point). Defaults to ``'ticket'``.
        masks (str): ``'ticket'`` or ``'random'``: the same number of kept weights per tensor at
            random positions (seeded; the random-mask control). Unstructured tickets only.
        seed (int): Seed of the random weights / masks. Defaults to 0.
        semi_structured (bool): ``'nm'`` tickets of pattern ``'2:4'`` only: run their 1x1
            convs as semi-structured sparse matrix products on channels-last input
            (:mod:`mmrecprune.sparsity.semi_structured`; inference in float16 / bfloat16 on a
            CUDA GPU of compute capability 8.0 or newer; training and other inputs run dense
            with the mask). Refused, with the reason, on a machine that cannot run them; leave
            it False there: the ticket then runs dense with its mask (same outputs up to
            rounding, no speed-up). Defaults to False.
        **options: any of :data:`BEHAVIOUR_KEYS`, e.g. ``out_indices=(0, 1, 2, 3)``,
            ``frozen_stages=1``, ``norm_eval=True``, and for segmentation
            ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True``.
            ``pretrained`` / ``init_cfg`` are ignored (the ticket's weights are used).
    """
    ignored = {k: options.pop(k) for k in IGNORED_KEYS if k in options}
    unknown = sorted(set(options) - set(BEHAVIOUR_KEYS))
    if unknown:
        raise TicketError(f'PrunedBackbone got options {unknown} it cannot apply; allowed are '
                          f'{list(BEHAVIOUR_KEYS)} (structure comes from the ticket)')
    for key, value in ignored.items():
        if value is not None:
            print_log(f'PrunedBackbone: ignoring {key}={value!r}: the ticket\'s weights are '
                      'used', logger='current')
    if ticket is None:
        raise TicketError('PrunedBackbone needs `ticket`: the path of a ticket file written by '
                          'a pruning run, e.g. ticket="work_dirs/recprune/tickets/round_7.pth"')
    transfer = (weights, masks) != ('ticket', 'ticket')
    if semi_structured is not False:
        check_semi_structured(semi_structured, keep_masks)
    if isinstance(ticket, str):
        if not osp.lexists(ticket):
            if transfer:
                print_log(f'PrunedBackbone: ignoring weights={weights!r} / masks={masks!r}: the '
                          'backbone comes from the checkpoint being loaded', logger='current')
            return DeferredTicketBackbone(ticket, keep_masks, options, semi_structured)
        ticket = load_ticket(ticket)
    elif not isinstance(ticket, Ticket):
        raise TicketError(f'PrunedBackbone `ticket` must be the path of a ticket file, got '
                          f'{type(ticket).__name__} {ticket!r}')
    if transfer:
        ticket = transfer_ticket(ticket, weights, masks, seed, options)
    return _build(ticket, keep_masks, options, semi_structured=semi_structured)


def check_semi_structured(option, keep_masks):
    """Refuse ``semi_structured=True`` where it cannot work (a ValueError naming the reason and
    what to do instead)."""
    from mmrecprune.sparsity import semi_structured
    if option is not True:
        raise TicketError(f'PrunedBackbone semi_structured must be True or False, got '
                          f'{option!r}')
    if not keep_masks:
        raise TicketError('PrunedBackbone semi_structured=True needs keep_masks=True: the '
                          'sparse kernels compute with the 2:4 pattern, which training without '
                          'the mask would fill in')
    reason = semi_structured.semi_structured_unavailable()
    if reason is not None:
        raise ValueError(
            f'PrunedBackbone semi_structured=True runs the 2:4 1x1 convs as semi-structured '
            f'sparse matrix products, which needs torch.sparse.to_sparse_semi_structured and a '
            f'CUDA GPU of compute capability 8.0 or newer; {reason}. Leave semi_structured='
            'False here: the ticket then runs dense with its mask (the same outputs up to '
            'rounding, no speed-up)')


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


def transfer_ticket(ticket, weights='ticket', masks='ticket', seed=0, behaviour=None):
    """The ticket with other starting weights and / or a random mask of the same per-layer
    sparsity (see :func:`build_backbone_from_ticket`); pruned entries are zero."""
    from mmrecprune.fileio import UnsafeCheckpointError, load_mmengine_checkpoint
    from mmrecprune.sparsity import random_masks_like, reinitialise
    if masks not in ('ticket', 'random'):
        raise TicketError(f"PrunedBackbone masks must be 'ticket' or 'random', got {masks!r}")
    if not isinstance(weights, str):
        raise TicketError(f"PrunedBackbone weights must be 'ticket', 'random' or a checkpoint "
                          f'path, got {weights!r}')
    if masks == 'random' and not ticket.masks:
        raise TicketError('masks="random" needs an unstructured ticket (one with masks); this '
                          f'one is {ticket.kind}')
    new_masks = random_masks_like(ticket.masks, seed, ticket.meta.get('pattern')) \
        if masks == 'random' else ticket.masks  # an nm ticket's control is N:M too
    state = dict(ticket.state_dict)
    if weights == 'random':
        net = _build(Ticket(meta=ticket.meta, state_dict=ticket.state_dict,
                            channel_structure=ticket.channel_structure), False,
                     dict(behaviour or {}), attach=False, quiet=True)
        reinitialise(net, seed)
        state = {k: v.detach().clone() for k, v in net.state_dict().items()
                 if isinstance(v, torch.Tensor)}
    elif weights != 'ticket':
        if not osp.isfile(weights):
            raise TicketError(f'PrunedBackbone weights={weights!r}: no such checkpoint file')
        try:
            ckpt = load_mmengine_checkpoint(weights, map_location='cpu')
        except UnsafeCheckpointError as err:
            raise TicketError(f'PrunedBackbone weights={weights!r}: {err}') from None
        source = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
        found = {k[len('backbone.'):]: v for k, v in source.items()
                 if k.startswith('backbone.') and isinstance(v, torch.Tensor)}
        bad = [k for k, v in state.items()
               if k not in found or tuple(found[k].shape) != tuple(v.shape)]
        if bad:
            raise TicketError(
                f'PrunedBackbone weights={weights!r} do not fit the ticket\'s backbone: '
                f'{len(bad)} of its tensors are missing or have other shapes, e.g. '
                + ', '.join(f'{k} {tuple(state[k].shape)} vs '
                            f'{tuple(found[k].shape) if k in found else "missing"}'
                            for k in bad[:3]) + '; give the dense checkpoint the ticket was '
                'pruned from (its backbone.* weights)')
        state = {k: found[k].to(v.dtype).clone() for k, v in state.items()}
    for name, mask in new_masks.items():
        state[name] = state[name] * mask
    meta = dict(ticket.meta, transfer=dict(weights=weights, masks=masks, seed=seed))
    return Ticket(meta=meta, state_dict=state, masks=new_masks,
                  channel_structure=ticket.channel_structure)


def _build(ticket, keep_masks, behaviour, attach=True, quiet=False, semi_structured=False):
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
    meta = ticket.meta
    transfer = meta.get('transfer')
    print_log(f'PrunedBackbone: {meta["kind"]} ticket from {meta.get("method", "?")} '
              f'(round {meta.get("round", "-")}, sparsity {meta.get("sparsity", 0):.3f}), '
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


# -- the ticket travels in the model's checkpoints ---------------------------------------------
def ticket_header(ticket, masks):
    """The ticket without its weights, as plain values and tensors (weights-only loadable)."""
    packed = {}
    for n, m in masks.items():
        packed[n] = dict(bits=pack_mask(m.cpu()), shape=list(m.shape))
        if n in ticket.fill_values:
            packed[n]['fill'] = ticket.fill_values[n].clone()
    return dict(meta=copy.deepcopy(ticket.meta),
                channel_structure=copy.deepcopy(ticket.channel_structure), masks=packed)


def attach_ticket_state(backbone, header):
    """Save ``header`` with the backbone's state_dict (a uint8 tensor); on load, check that a
    checkpoint's header describes the same structure (its weights would not fit otherwise)."""
    backbone._ticket_header = header
    backbone._ticket_header_bytes = ticket_bytes(header)

    def save_header(module, state_dict, prefix, local_metadata):
        state_dict[prefix + TICKET_STATE_KEY] = header_tensor(module._ticket_header_bytes)

    def check_header(module, state_dict, prefix, *args):
        saved = read_header(state_dict.pop(prefix + TICKET_STATE_KEY, None), prefix)
        if saved is None:
            return  # a checkpoint of the dense model
        own = module._ticket_header
        if saved['channel_structure'] != own['channel_structure']:
            raise TicketError(
                f'the checkpoint\'s backbone was trained on another ticket (method '
                f'{saved["meta"].get("method")!r}, round {saved["meta"].get("round")!r}) with '
                f'other channel widths than `ticket` in the config '
                f'({own["meta"].get("method")!r}, round {own["meta"].get("round")!r}); point '
                'model.backbone.ticket at the ticket the model was trained on, or move it away '
                'so the checkpoint\'s own is used')
        saved_masks, own_masks = saved['masks'], own['masks']
        if set(saved_masks) != set(own_masks) or any(
                not torch.equal(saved_masks[n]['bits'].cpu(), own_masks[n]['bits'])
                for n in own_masks):
            print_log('PrunedBackbone: the checkpoint was trained with other masks than the '
                      'config\'s ticket; its weights are loaded, but further training keeps '
                      'the config ticket\'s masks. Point model.backbone.ticket at the ticket '
                      'the model was trained on to keep its masks', logger='current',
                      level=logging.WARNING)

    backbone._register_state_dict_hook(save_header)
    backbone._register_load_state_dict_pre_hook(check_header, with_module=True)


def header_tensor(data):
    """The state_dict entry that carries a ticket header: its bytes as a uint8 tensor."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def read_header(entry, prefix):
    """The ticket header in a checkpoint's ``<prefix>ticket`` entry, read as data and checked
    against the ticket schema (without weights); None if there is no entry."""
    if entry is None:
        return None
    where = f'checkpoint entry {prefix}{TICKET_STATE_KEY}'
    if type(entry) is dict:  # written by mmrecprune 0.1 (a dict in the state_dict)
        return check_ticket_header(entry, where)
    if type(entry) is not torch.Tensor or entry.dtype != torch.uint8 or entry.dim() != 1:
        raise TicketError(f'{where} is not a ticket header (a uint8 tensor); the checkpoint '
                          'is corrupted or was edited')
    return check_ticket_header(read_ticket_bytes(entry.cpu().numpy().tobytes(), where), where)


class DeferredTicketBackbone(nn.Module):
    """Stands in for a ticket backbone whose ticket file is missing, until a checkpoint of a
    model trained on that ticket is loaded: its ``<prefix>ticket`` entry and backbone weights
    build the real backbone, which this object then becomes (same object, so the parent model
    and the loader that is iterating over it keep working)."""

    def __init__(self, ticket_path, keep_masks, behaviour, semi_structured=False):
        super().__init__()
        self.ticket_path = ticket_path
        self.keep_masks = keep_masks
        self.behaviour = dict(behaviour)
        self.semi_structured = semi_structured
        # follows .to(device) / .half() calls so the real backbone lands where the model is
        self.register_buffer('_device_probe', torch.zeros(0), persistent=False)

    def forward(self, *args, **kwargs):
        raise TicketError(
            f'ticket file {self.ticket_path!r} does not exist, so the backbone cannot run. Fix '
            'model.backbone.ticket, export a ticket with a pruning run (see '
            'configs/recprune/README.md), or load a checkpoint of a model trained on the ticket '
            '(it carries the ticket) before running the model')

    def init_weights(self):
        # a runner initialises weights before it loads load_from / resume checkpoints
        raise TicketError(
            f'ticket file {self.ticket_path!r} does not exist; training needs the ticket file '
            'itself (a checkpoint that carries the ticket loads only after the weights are '
            'initialised). Fix model.backbone.ticket or export a ticket with a pruning run '
            '(see configs/recprune/README.md)')

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        header = read_header(state_dict.pop(prefix + TICKET_STATE_KEY, None), prefix)
        if header is None:
            raise TicketError(
                f'ticket file {self.ticket_path!r} does not exist and the checkpoint being '
                f'loaded holds no ticket ({prefix}{TICKET_STATE_KEY} is missing: it was not '
                'trained on a ticket, or by an mmrecprune older than 0.2). Restore the ticket '
                'file at that path or fix model.backbone.ticket')
        weights = {k[len(prefix):]: v for k, v in state_dict.items()
                   if k.startswith(prefix) and isinstance(v, torch.Tensor)}
        ticket = validate_ticket(dict(header, state_dict=weights),
                                 f'{self.ticket_path} (carried by the checkpoint)')
        real = _build(ticket, self.keep_masks, self.behaviour, attach=False,
                      semi_structured=self.semi_structured)
        real.to(self._device_probe.device)
        real.train(self.training)
        print_log(f'PrunedBackbone: {self.ticket_path!r} is missing; built the backbone from '
                  'the ticket carried by the checkpoint', logger='current')
        kept_masks = ticket.masks if self.keep_masks else {}
        self.__class__ = type(real)
        self.__dict__ = real.__dict__
        # hooks hold the module they belong to: attach them to this object, not to `real`
        attach_ticket_state(self, ticket_header(ticket, kept_masks))
        self._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                   unexpected_keys, error_msgs)


MODELS.register_module(name='PrunedBackbone', module=build_backbone_from_ticket)
