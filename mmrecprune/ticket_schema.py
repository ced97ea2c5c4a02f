"""The declared schema of a ticket: every key of its header typed and range-checked.

A ticket (or the ticket header a detector checkpoint carries) is data. Before anything is
built from it, :func:`check_ticket_payload` checks it against this schema: the backbone is one
of :data:`BACKBONES`, a closed list of the backbones the project supports and tests, each with
its own keys, types and ranges; the ``meta`` keys are those :func:`~mmrecprune.tickets.
export_ticket` writes; masks and channel structure have fixed shapes. Unknown keys are refused.
A backbone is then built by :func:`build_ticket_backbone` from the class this module maps its
canonical name to, not through a registry, so no string from a file ever names code: the only
strings that reach one (``norm_cfg`` / ``act_cfg`` types, which MMCV builds) come from closed
lists here.
"""
import math

import torch

TICKET_FORMAT = 'mmrecprune-ticket'
TICKET_VERSION = 2
#: ``'nm'``: an unstructured ticket whose masks satisfy the N:M ``pattern`` of its meta
TICKET_KINDS = ('unstructured', 'structured', 'dense', 'nm')
MAX_NAME = 256


class TicketError(ValueError):
    """A file that is not a usable ticket (wrong format, corrupted, mismatched, or holding
    anything outside the declared schema)."""


# -- value specs: callables (value, where) -> checked value -------------------------------------
def _fail(where, msg):
    raise TicketError(f'{where}: {msg}')


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def Int(low, high):
    def check(value, where):
        if type(value) is not int or not low <= value <= high:
            _fail(where, f'must be an int in [{low}, {high}], got {_shown(value)}')
        return value
    return check


def Float(low, high):
    def check(value, where):
        if type(value) not in (int, float) or not math.isfinite(value) or \
                not low <= value <= high:
            _fail(where, f'must be a finite number in [{low}, {high}], got {_shown(value)}')
        return value
    return check


def Bool(value, where):
    if type(value) is not bool:
        _fail(where, f'must be true or false, got {_shown(value)}')
    return value


def Str(max_len=MAX_NAME, choices=None):
    def check(value, where):
        if type(value) is not str or len(value) > max_len:
            _fail(where, f'must be a string of at most {max_len} characters, got '
                         f'{_shown(value)}')
        if choices is not None and value not in choices:
            _fail(where, f'must be one of {list(choices)}, got {_shown(value)}')
        return value
    return check


def Choice(*choices):
    def check(value, where):
        if not any(type(value) is type(c) and value == c for c in choices):
            _fail(where, f'must be one of {list(choices)}, got {_shown(value)}')
        return value
    return check


def NMPattern(value, where):
    """An N:M pattern string ``'N:M'`` (``1 <= N < M <= 32``: a short string matched by a
    regex, then its two ints range-checked)."""
    from mmrecprune.sparsity.nm_layout import MAX_NM_GROUP, parse_nm_pattern
    try:
        if type(value) is not str or len(value) > 5:
            raise ValueError
        parse_nm_pattern(value)
    except ValueError:
        _fail(where, f"must be an N:M pattern 'N:M' with 1 <= N < M <= {MAX_NM_GROUP} (e.g. "
                     f"'2:4'), got {_shown(value)}")
    return value


def NoneOr(spec):
    return lambda value, where: None if value is None else spec(value, where)


def Seq(spec, min_len, max_len):
    """A list or tuple (returned as the same type)."""
    def check(value, where):
        if type(value) not in (list, tuple) or not min_len <= len(value) <= max_len:
            _fail(where, f'must be a list of {min_len}..{max_len} items, got {_shown(value)}')
        return type(value)(spec(v, f'{where}[{i}]') for i, v in enumerate(value))
    return check


def Fields(fields, required=()):
    """A dict with only the keys of ``fields``, ``required`` among them."""
    def check(value, where):
        if type(value) is not dict:
            _fail(where, f'must be a dict, got {_shown(value)}')
        unknown = sorted(map(str, set(value) - set(fields)))
        if unknown:
            _fail(where, f'unknown keys {unknown}; allowed are {sorted(fields)}')
        missing = [k for k in required if k not in value]
        if missing:
            _fail(where, f'lacks {missing}')
        return {k: fields[k](v, f'{where}.{k}') for k, v in value.items()}
    return check


def MapOf(value_spec, max_items):
    """A dict from names (str) to values of one spec."""
    def check(value, where):
        if type(value) is not dict or len(value) > max_items:
            _fail(where, f'must be a dict of at most {max_items} entries, got {_shown(value)}')
        name = Str()
        return {name(k, f'{where} key'): value_spec(v, f'{where}[{k!r}]')
                for k, v in value.items()}
    return check


def Scalar(value, where):
    if value is not None and type(value) not in (str, int, float, bool) or \
            type(value) is str and len(value) > MAX_NAME or \
            type(value) is float and not math.isfinite(value):
        _fail(where, f'must be a number, a short string, a bool or None, got {_shown(value)}')
    return value


# -- backbones ---------------------------------------------------------------------------------
_NORM = Fields(dict(type=Str(choices=('BN', 'BN2d', 'SyncBN', 'GN')), requires_grad=Bool,
                    eps=Float(0, 1), momentum=NoneOr(Float(0, 1)), num_groups=Int(1, 4096),
                    affine=Bool), required=('type', ))
_ACT = Fields(dict(type=Str(choices=('ReLU', 'ReLU6')), inplace=Bool), required=('type', ))
_NONE_ONLY = Choice(None)
_RESNET = dict(
    depth=Choice(18, 34, 50, 101, 152), in_channels=Int(1, 16),
    stem_channels=NoneOr(Int(1, 4096)), base_channels=Int(1, 4096), num_stages=Int(1, 4),
    strides=Seq(Int(1, 4), 1, 4), dilations=Seq(Int(1, 64), 1, 4),
    out_indices=Seq(Int(0, 3), 1, 4), style=Str(choices=('pytorch', 'caffe')),
    deep_stem=Bool, avg_down=Bool, frozen_stages=Int(-1, 4), conv_cfg=_NONE_ONLY,
    norm_cfg=_NORM, norm_eval=Bool, dcn=_NONE_ONLY, stage_with_dcn=Seq(Bool, 1, 4),
    plugins=_NONE_ONLY, with_cp=Bool, zero_init_residual=Bool)
_MMSEG_RESNET = dict(_RESNET, stem_channels=Int(1, 4096), contract_dilation=Bool,
                     multi_grid=NoneOr(Seq(Int(1, 16), 1, 8)))
# the V1c / V1d classes set deep_stem / avg_down themselves
_FIXED_STEM = ('deep_stem', 'avg_down')
_MOBILENET_V2 = dict(
    out_indices=Seq(Int(0, 7), 1, 8), frozen_stages=Int(-1, 8), widen_factor=Float(0.01, 8),
    conv_cfg=_NONE_ONLY, norm_cfg=_NORM, act_cfg=_ACT, norm_eval=Bool, with_cp=Bool)


def _without(fields, keys):
    return {k: v for k, v in fields.items() if k not in keys}


#: canonical type -> (module, class name, allowed keys); built by :func:`build_ticket_backbone`
BACKBONES = {
    'mmdet.ResNet': ('mmdet.models.backbones', 'ResNet', _RESNET),
    'mmdet.ResNetV1d': ('mmdet.models.backbones', 'ResNetV1d', _without(_RESNET, _FIXED_STEM)),
    'mmdet.MobileNetV2': ('mmdet.models.backbones', 'MobileNetV2', _MOBILENET_V2),
    'mmseg.ResNet': ('mmseg.models.backbones', 'ResNet', _MMSEG_RESNET),
    'mmseg.ResNetV1c': ('mmseg.models.backbones', 'ResNetV1c',
                        _without(_MMSEG_RESNET, _FIXED_STEM)),
    'mmseg.ResNetV1d': ('mmseg.models.backbones', 'ResNetV1d',
                        _without(_MMSEG_RESNET, _FIXED_STEM)),
}
#: names a config may use without a scope (tickets exported from such configs store them)
BACKBONE_ALIASES = {'ResNet': 'mmdet.ResNet', 'ResNetV1d': 'mmdet.ResNetV1d',
                    'MobileNetV2': 'mmdet.MobileNetV2', 'ResNetV1c': 'mmseg.ResNetV1c'}


def check_backbone_cfg(cfg, where='ticket backbone'):
    """The backbone config with its canonical type and checked values (raise TicketError)."""
    if type(cfg) is not dict:
        _fail(where, f'must be a dict, got {_shown(cfg)}')
    name = cfg.get('type')
    name = BACKBONE_ALIASES.get(name, name) if type(name) is str else name
    if name not in BACKBONES:
        _fail(where, f'type {_shown(cfg.get("type"))} is not a supported backbone; tickets '
                     f'describe one of {sorted(BACKBONES)}')
    fields = BACKBONES[name][2]
    if 'depth' in fields and 'depth' not in cfg:
        _fail(where, f'{name} needs depth')
    checked = Fields(fields)({k: v for k, v in cfg.items() if k != 'type'}, where)
    return dict(checked, type=name)


def build_ticket_backbone(cfg, device=None):
    """Build a backbone from a config that :func:`check_backbone_cfg` accepts (it is checked
    again here), constructing its class from the closed table, not through a registry;
    ``device='meta'``: shapes only, nothing allocated."""
    import importlib
    cfg = check_backbone_cfg(cfg)
    module, cls_name, _ = BACKBONES[cfg.pop('type')]
    # imported outside the device context: tensors a module makes at import (mmcv.ops has
    # some) must not become meta tensors for the rest of the process
    cls = getattr(importlib.import_module(module), cls_name)
    if device is None:
        return cls(**cfg)
    with torch.device(device):
        return cls(**cfg)


# -- the ticket header -------------------------------------------------------------------------
_FRACTION = Float(0, 1)
_COUNT = Int(0, 10 ** 15)
_SMALL_INT = Int(0, 10 ** 9)
_REAL = Float(-1e9, 1e9)
_SHORT = NoneOr(Str(64))
META_FIELDS = dict(
    format=Choice(TICKET_FORMAT), version=Int(1, TICKET_VERSION), kind=Choice(*TICKET_KINDS),
    backbone=check_backbone_cfg,
    # provenance (export_ticket)
    # step: pruning steps done; round / steps: its names in tickets written before it had
    # one (still read, never written: mmrecprune.tickets.ticket_step)
    method=Str(64), step=_SMALL_INT, round=_SMALL_INT, steps=_SMALL_INT, iterations=_SMALL_INT,
    warmup_iters=_SMALL_INT, source=NoneOr(Str(4096)), input_shape=Seq(Int(1, 65536), 4, 4),
    flops=_COUNT, params=_COUNT, flops_dense=_COUNT, params_dense=_COUNT,
    prunable_params=_COUNT, pruned_params=_COUNT, nonzero_params=_COUNT,
    flops_nonzero=_COUNT, flops_ratio=_FRACTION, params_ratio=_FRACTION, sparsity=_FRACTION,
    # the methods' own arguments
    prune_ratio=_FRACTION, target_sparsity=_FRACTION, rewind_to=_SHORT, ranking=_SHORT,
    recovery=_SHORT, penalty=_REAL, margin=_REAL, target=MapOf(_FRACTION, 4),
    pattern=NMPattern,  # kind 'nm': the N:M pattern every mask satisfies
    prune_residual=Bool, round_to=_SMALL_INT, min_keep=_SMALL_INT,
    importance=MapOf(Scalar, 16), protective=Bool, protect_factor=_REAL, adaptive=Bool,
    sparsity_eps=_REAL, ratio_floor=_REAL, restored=_SMALL_INT,
    kept_channels=MapOf(Int(0, 65536), 10000),
    out_channels=Seq(Int(1, 65536), 1, 8), dense_out_channels=Seq(Int(1, 65536), 1, 8),
    # what PrunedBackbone changed (weights=..., masks=...), carried in checkpoints
    transfer=Fields(dict(weights=Str(4096), masks=Choice('ticket', 'random'),
                         seed=Int(0, 2 ** 32)), required=('weights', 'masks', 'seed')),
)
_META = Fields(META_FIELDS, required=('format', 'version', 'kind', 'backbone'))
_WIDTHS = Fields(dict(**{'in': Int(1, 65536), 'out': Int(1, 65536)}), required=('in', 'out'))
_CHANNEL_STRUCTURE = MapOf(_WIDTHS, 10000)
PAYLOAD_KEYS = ('meta', 'state_dict', 'masks', 'channel_structure')
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_meta(meta, where):
    """The ticket's ``meta`` (raise TicketError naming the key and the fix)."""
    if type(meta) is not dict or type(meta.get('format')) is not str or \
            meta['format'] != TICKET_FORMAT:
        _fail(where, f'not an mmrecprune ticket (no "{TICKET_FORMAT}" header); a training '
                     'checkpoint goes into `init_cfg=dict(type="Pretrained")`, a ticket into '
                     '`type="mmrecprune.PrunedBackbone"`')
    version = meta.get('version')
    if type(version) is int and version > TICKET_VERSION:
        _fail(where, f'ticket format version {version}; this mmrecprune reads up to '
                     f'{TICKET_VERSION}: upgrade mmrecprune')
    return _META(meta, f'{where} meta')


def check_state_dict(state_dict, where):
    """The ticket's weights: named tensors, at least one, each what a backbone's state_dict
    holds under its name (:func:`check_weight`); raise TicketError naming the first that is
    not."""
    if not isinstance(state_dict, dict) or not all(
            type(k) is str and len(k) <= MAX_NAME and type(v) is torch.Tensor
            for k, v in state_dict.items()):
        _fail(where, 'ticket has no state_dict of named tensors')
    if not state_dict:
        # every backbone of the schema has weights, and a ticket carries them all
        _fail(where, 'ticket holds no weights (empty state_dict); a ticket is the backbone\'s '
                     'weights with its config: export it again from the pruning run')
    for name, value in state_dict.items():
        check_weight(name, value, f'{where} state_dict entry {name!r}')
    return dict(state_dict)


_REEXPORT = 'the file is corrupted or was edited: export the ticket again from the pruning run'


def check_weight(name, value, where):
    """Raise TicketError unless ``value`` is what a backbone state_dict holds under ``name``:
    BatchNorm's ``num_batches_tracked`` an int64 scalar >= 0; every other entry (weights,
    biases, running statistics) a dense floating point tensor (a dtype of
    :data:`FLOAT_DTYPES`, which exports keep) of finite values, a ``running_var`` >= 0.
    Loading casts into the backbone's dtype, so an int or bool tensor would pass as weights
    and a float step count wrap around: the dtype is checked, not converted."""
    if value.layout is not torch.strided:
        _fail(where, f'must be a dense tensor, got layout {value.layout}; {_REEXPORT}')
    if name.rpartition('.')[2] == 'num_batches_tracked':
        if value.dtype != torch.int64 or value.dim() != 0 or int(value) < 0:
            _fail(where, f'must be an int64 scalar >= 0 (BatchNorm\'s count of training '
                         f'batches), got a {value.dtype} tensor of shape {list(value.shape)}'
                         + (f' holding {value.item()}' if value.numel() == 1 else '')
                         + f'; {_REEXPORT}')
        return
    if value.dtype not in FLOAT_DTYPES:
        _fail(where, f'must be a floating point tensor ({", ".join(map(str, FLOAT_DTYPES))}), '
                     f'got {value.dtype}: loading would cast it silently; {_REEXPORT}')
    if not torch.isfinite(value).all():
        _fail(where, 'holds NaN or infinite values: the run that exported it diverged or '
                     f'{_REEXPORT}')
    if name.rpartition('.')[2] == 'running_var' and (value < 0).any():
        _fail(where, f'holds negative values (min {value.min().item():.3g}); a variance is >= 0: '
                     f'{_REEXPORT}')


def check_masks_entries(masks, state_dict, where):
    """Packed masks: ``{name: {'bits': uint8 1-D, 'shape': weight shape, 'fill': tensor}}``;
    ``state_dict`` None: a header without weights (shapes checked against the bits only)."""
    if type(masks) is not dict:
        _fail(where, f'masks must be a dict, got {_shown(masks)}')
    for name, entry in masks.items():
        at = f'{where} mask {name!r}'
        entry = Fields(dict(bits=_tensor, shape=Seq(Int(0, 2 ** 31), 0, 8), fill=_tensor),
                       required=('bits', 'shape'))(entry, at)
        shape = list(entry['shape'])
        if state_dict is not None and (name not in state_dict or
                                       shape != list(state_dict[name].shape)):
            _fail(at, f'(shape {shape}) does not match the ticket weights; the file is '
                      'corrupted or was edited')
        numel, bits = math.prod(shape), entry['bits']
        if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != math.ceil(numel / 8):
            _fail(at, f'bits must be {math.ceil(numel / 8)} packed uint8 values')
        fill = entry.get('fill')
        if fill is not None and (fill.dtype not in FLOAT_DTYPES or fill.numel() > numel or
                                 fill.dim() > len(shape) or not torch.isfinite(fill).all()):
            _fail(at, 'fill value must be a finite float tensor that broadcasts to the weight')
    return masks


def _tensor(value, where):
    if type(value) is not torch.Tensor:
        _fail(where, f'must be a tensor, got {_shown(value)}')
    return value


def content_kind(meta, masks, structure):
    """The kind the content makes a ticket: ``'nm'`` (masks and an N:M ``pattern`` in
    ``meta``), ``'unstructured'`` (masks), ``'structured'`` (channel structure) or
    ``'dense'``."""
    if masks:
        return 'nm' if meta.get('pattern') is not None else 'unstructured'
    return 'structured' if structure else 'dense'


def check_kind(meta, masks, structure, where):
    """Raise TicketError unless the header's ``kind`` is what the content makes it, and an
    ``'nm'`` ticket's masks satisfy its pattern (unpacked and checked group by group) with
    zeros in their pruned entries (no fill values)."""
    kind = content_kind(meta, masks, structure)
    if meta['kind'] != kind:
        _fail(where, f'header says kind {meta["kind"]!r} but the content is {kind} (masks: '
                     f'{len(masks)}, channel_structure entries: {len(structure)}, pattern: '
                     f'{meta.get("pattern")!r})')
    if 'pattern' in meta and kind != 'nm':
        _fail(where, f'meta pattern {meta["pattern"]!r} belongs to an nm ticket (masks), '
                     f'this one is {kind}')
    if kind == 'nm':
        from mmrecprune.sparsity.masks import unpack_mask
        from mmrecprune.sparsity.nm_layout import nm_violations
        for name, entry in masks.items():
            if entry.get('fill') is not None:
                _fail(where, f'nm ticket mask {name!r} has a fill value; the pruned entries '
                             'of an N:M ticket are zero')
            mask = unpack_mask(entry['bits'], list(entry['shape']))
            if mask.dim() < 2:
                _fail(where, f'nm ticket mask {name!r} has shape {list(entry["shape"])}; N:M '
                             'masks are on conv or linear weights ([out, in, ...])')
            bad = nm_violations({name: mask}, meta['pattern'])
            if bad:
                _fail(where, f'nm ticket mask {name!r} breaks its pattern '
                             f'{meta["pattern"]!r} in {bad[name]} groups (more than N of M '
                             'consecutive input channels kept); the file is corrupted or was '
                             'edited')


def check_ticket_header(header, where):
    """A checkpoint's ticket header (a ticket without ``state_dict``), checked; returned as
    ``dict(meta=..., channel_structure=..., masks=...)``."""
    if type(header) is not dict or set(header) != {'meta', 'channel_structure', 'masks'}:
        _fail(where, 'does not hold a ticket header (meta, channel_structure, masks)')
    meta = check_meta(header['meta'], where)
    masks = check_masks_entries(header['masks'], None, where)
    structure = _CHANNEL_STRUCTURE(header['channel_structure'], f'{where} channel_structure')
    if masks or structure:  # a header holds no masks when the training did not keep them
        check_kind(meta, masks, structure, where)
    return dict(meta=meta, channel_structure=structure, masks=masks)


def check_ticket_payload(payload, where):
    """Check a loaded ticket file (or a checkpoint's ticket header plus its weights) against
    the schema; return ``(meta, state_dict, masks, channel_structure)``."""
    if type(payload) is not dict:
        _fail(where, 'not an mmrecprune ticket (the file holds no dict)')
    meta = check_meta(payload.get('meta'), where)
    unknown = sorted(map(str, set(payload) - set(PAYLOAD_KEYS)))
    if unknown:
        _fail(where, f'unknown top-level keys {unknown}; a ticket holds {list(PAYLOAD_KEYS)}')
    state_dict = check_state_dict(payload.get('state_dict'), where)
    masks = check_masks_entries(payload.get('masks') or {}, state_dict, where)
    structure = _CHANNEL_STRUCTURE(payload.get('channel_structure') or {},
                                   f'{where} channel_structure')
    for name, widths in structure.items():
        weight = state_dict.get(f'{name}.weight')
        if weight is None or weight.dim() < 1 or weight.shape[0] != widths['out']:
            _fail(where, f'channel_structure entry {name!r} ({widths}) has no weight of '
                         f'{widths["out"]} output channels in the ticket; the file is corrupted '
                         'or was edited')
    check_kind(meta, masks, structure, where)
    return meta, state_dict, masks, structure


