"""The ticket file: one weights-only checkpoint that fully describes a pruned backbone.

Layout (only dicts, lists, str, int, float, bool, None and tensors, so it also loads with plain
``torch.load(weights_only=True)``; :func:`load_ticket` reads it with the project's own reader,
:mod:`mmrecprune.fileio`, and checks it against :mod:`mmrecprune.ticket_schema`)::

    {'meta': {'format': 'mmrecprune-ticket', 'version': 2,
              'kind': 'unstructured' | 'structured' | 'dense' | 'nm',
              'backbone': <backbone config dict>, 'method': str, 'step': int, ...},
                                                  # every key in ticket_schema.META_FIELDS
     'state_dict': {name: tensor},                # backbone weights (slim if structured)
     'masks': {name: {'bits': uint8, 'shape': [...],    # unstructured: packed masks,
                      'fill': tensor}},                 # v2, optional: see below
     'channel_structure': {module: {'in': c, 'out': c}}} # structured: the slim widths

Version 2 adds ``fill``: the value pruned entries hold, a tensor that broadcasts to the weight
(``[]`` per layer, ``[C_out, 1, 1, 1]`` per filter, the weight's shape per entry). Without it
(every version-1 ticket) pruned entries are 0. Loading checks that pruned entries equal their
fill value, and ``PrunedBackbone`` keeps them there during fine-tuning.

Meta keys written by :func:`export_ticket` mean the same for every kind:

* ``params`` / ``flops``: the whole backbone as shipped (its tensors' sizes; multiply-
  accumulates for one ``input_shape`` input); ``params_dense`` / ``flops_dense``: the dense
  backbone it was pruned from; ``params_ratio`` / ``flops_ratio``: shipped / dense.
* ``nonzero_params`` / ``flops_nonzero``: the same counting only entries that are not pruned
  (unstructured pruned entries are stored but carry no information).
* ``prunable_params``: weights the method could prune (unstructured: the masked tensors;
  structured: the backbone's conv and linear weights); ``pruned_params``: those it removed;
  ``sparsity`` = pruned / prunable.
* ``method``, ``step`` (pruning steps done: an iterative pruner's rounds, a structured
  pruner's scheduled steps), ``source`` (the starting weights), ``input_shape`` and the
  method's own arguments.
* ``pattern`` (kind ``'nm'`` only): the N:M pattern, e.g. ``'2:4'``, that every mask
  satisfies: in each group of M consecutive input channels (of one filter at one kernel tap)
  at most N entries are kept; input channels past the last whole group may be dense. An nm
  ticket is an unstructured ticket in every other respect (zeros in the pruned entries, no
  fill values); loading checks the pattern group by group.

The pruning counter had other names in tickets written before it was ``step``: ``round``
(IMP, RecPrune, on-the-fly) or ``round`` and ``steps`` together (structured, post-training).
Those tickets load as before; read the counter with :func:`ticket_step` (or
:attr:`Ticket.step`), which takes any of the three. This is no format change, so the version
stays 2: the v2 schema accepts ``step`` beside the old keys (a v2 reader loses nothing it read
before) and :func:`save_ticket` writes ``step`` only, renaming ``round`` / ``steps`` given by
a pruner written for earlier releases. An mmrecprune older than ``step`` refuses a new ticket
(unknown meta key ``step``) instead of misreading it. The files keep their names,
``tickets/round_<k>.pth``: configs, docs and scripts point at those paths, and the name says
which round of a run wrote the file, not which key its meta uses.
"""
import copy
import io
import os
import os.path as osp
import tempfile
from dataclasses import dataclass, field

import torch

from mmrecprune.fileio import UnsafeCheckpointError, read_archive
from mmrecprune.sparsity import pack_mask, unpack_mask
from mmrecprune.ticket_schema import (TICKET_FORMAT, TICKET_KINDS, TICKET_VERSION,  # noqa
                                      TicketError, check_backbone_cfg, check_ticket_payload,
                                      content_kind)


#: The state_dict entry (under the backbone's prefix) of a ticket backbone that carries its
#: ticket header: a uint8 tensor holding :func:`ticket_bytes` of it.
TICKET_STATE_KEY = 'ticket'

#: Names of the pruning counter (meta ``step``) in tickets written before it had one name.
LEGACY_STEP_KEYS = ('round', 'steps')


def ticket_step(meta):
    """The pruning steps a ticket's ``meta`` records: ``step``, or in a ticket written before
    the counter had one name ``round`` / ``steps``; None if it records none (a dense ticket)."""
    for key in ('step', ) + LEGACY_STEP_KEYS:
        if meta.get(key) is not None:
            return meta[key]
    return None


def step_meta(meta):
    """``meta`` with its pruning counter under ``step`` only, as every new ticket names it
    (a pruner written for earlier releases passes ``round=`` or ``steps=``)."""
    named = {k: meta[k] for k in ('step', ) + LEGACY_STEP_KEYS if meta.get(k) is not None}
    values = list(named.values())
    if any(type(v) is not type(values[0]) or v != values[0] for v in values):
        raise TicketError(f'ticket meta gives the pruning step different values: {named}')
    meta = {k: v for k, v in meta.items() if k not in LEGACY_STEP_KEYS}
    if values:
        meta['step'] = values[0]
    return meta


def without_ticket_header(state_dict):
    """The weights of a state_dict: the ticket header entries (``...ticket``) left out."""
    return {k: v for k, v in state_dict.items()
            if k.rpartition('.')[2] != TICKET_STATE_KEY and isinstance(v, torch.Tensor)}


@dataclass
class Ticket:
    """A loaded ticket. ``masks`` are unpacked bool tensors keyed like ``state_dict``."""
    meta: dict
    state_dict: dict
    masks: dict = field(default_factory=dict)
    channel_structure: dict = field(default_factory=dict)
    fill_values: dict = field(default_factory=dict)  # v2: non-zero values of pruned entries

    @property
    def kind(self):
        return self.meta['kind']

    @property
    def step(self):
        """Pruning steps done (None: none recorded); see :func:`ticket_step`."""
        return ticket_step(self.meta)

    @property
    def backbone_cfg(self):
        return dict(self.meta['backbone'])


def _plain(obj):
    """Turn a (Config)dict / tuple tree into plain dicts / lists / scalars for weights_only."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TicketError(f'cannot store {type(obj).__name__} value {obj!r} in a ticket; '
                      'backbone configs must hold plain values')


def plain_values(obj):
    """``obj`` (a (Config)dict / list / tuple tree of plain values) as plain dicts, lists and
    scalars, the only containers a ticket or a checkpoint we write may hold."""
    return _plain(obj)


def clean_backbone_cfg(cfg):
    """The backbone config a ticket stores and builds from: a plain dict without ``init_cfg``
    / ``pretrained`` (a ticket holds its weights; nothing may load others over them), checked
    against the ticket schema (its canonical type, e.g. ``'mmdet.ResNet'``)."""
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else copy.deepcopy(dict(cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return check_backbone_cfg(_plain(cfg), 'backbone config')


def save_ticket(path, backbone_cfg, state_dict, masks=None, channel_structure=None,
                fill_values=None, **meta):
    """Write a ticket atomically (a failed write never leaves a half-written ``path``).

    Args:
        path (str): output file.
        backbone_cfg (dict): config that builds the dense backbone (e.g. ``mmdet.ResNet``);
            stored through :func:`clean_backbone_cfg`.
        state_dict (dict): backbone weights, keys relative to the backbone.
        masks (dict, optional): unstructured masks (bool tensors) for some weights.
        channel_structure (dict, optional): slim widths from
            :func:`mmrecprune.sparsity.slim_model`.
        fill_values (dict, optional): for some masks, the value their pruned entries hold
            (tensor broadcasting to the weight); the default is 0.
        **meta: provenance (method, step, sparsity, flops, params, source, ...); with masks,
            ``pattern='N:M'`` makes the ticket of kind ``'nm'`` (its masks must satisfy it).
            ``round`` / ``steps`` (earlier names of ``step``) are stored as ``step``.
    """
    if masks and channel_structure:
        raise TicketError('a ticket is either unstructured (masks) or structured '
                          '(channel_structure), not both')
    meta = step_meta(meta)
    kind = content_kind(meta, masks, channel_structure)
    state_dict = {k: v.detach().cpu().clone()
                  for k, v in without_ticket_header(state_dict).items()}
    packed = {}
    for name in sorted(set(fill_values or {}) - set(masks or {})):
        raise TicketError(f'fill value for {name!r}, which has no mask')
    for name, mask in (masks or {}).items():
        if name not in state_dict or state_dict[name].shape != mask.shape:
            raise TicketError(f'mask {name!r} does not match any weight of the same shape')
        packed[name] = dict(bits=pack_mask(mask.cpu()), shape=list(mask.shape))
        if fill_values and name in fill_values:
            fill = torch.as_tensor(fill_values[name]).detach().cpu().to(state_dict[name].dtype)
            check_fill(name, state_dict[name], mask.cpu(), fill)
            packed[name]['fill'] = fill.clone()
    payload = dict(
        meta=_plain(dict(meta, format=TICKET_FORMAT, version=TICKET_VERSION, kind=kind,
                         backbone=clean_backbone_cfg(backbone_cfg))),
        state_dict=state_dict, masks=packed, channel_structure=_plain(channel_structure or {}))
    check_ticket_payload(payload, 'ticket to save')  # what we write, we can read back
    # serialised in memory first: torch.save names the zip's records after the file it writes,
    # and a random temporary name would make identical tickets differ byte for byte (sha256)
    write_atomically(path, ticket_bytes(payload))
    return path


def write_atomically(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file in the same folder, so a
    failed write never leaves a half-written ``path``. The file gets the permissions of any
    new file (``0o666`` less the umask), not the temporary file's owner-only ones."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def check_fill(name, weight, mask, fill=None, where='ticket'):
    """Raise TicketError unless ``weight``'s pruned entries equal ``fill`` (default 0)."""
    if fill is None:
        if weight[~mask].any():
            raise TicketError(f'{where}: weight {name!r} is non-zero where its mask prunes it')
        return
    try:
        expected = torch.broadcast_to(fill, weight.shape)
    except RuntimeError:
        raise TicketError(f'{where}: fill value of {name!r} has shape {tuple(fill.shape)}, '
                          f'which does not broadcast to the weight {tuple(weight.shape)}') \
            from None
    if not torch.equal(weight[~mask], expected[~mask]):
        raise TicketError(f'{where}: weight {name!r} differs from its fill value where its mask '
                          'prunes it')


def load_ticket(path):
    """Load a ticket file as data and check it against the ticket schema.

    Raises:
        TicketError: the file is missing, not a ticket, corrupted, or holds anything outside
            the schema (nothing in it was executed).
    """
    from mmrecprune.fileio.mmengine_records import MMENGINE_GLOBALS
    if not isinstance(path, str):
        raise TicketError(f'a ticket path must be a str, got {type(path).__name__} {path!r}')
    if osp.isdir(path):
        raise TicketError(f'ticket path {path!r} is a directory; give the ticket file inside '
                          'it, e.g. work_dirs/<run>/tickets/round_7.pth or tickets/slim.pth')
    if not osp.isfile(path):
        raise TicketError(f'ticket file {path!r} does not exist; export one with a pruning '
                          'run (see configs/recprune/README.md) or fix the `ticket` path')
    if osp.getsize(path) == 0:
        raise TicketError(f'ticket file {path!r} is empty (0 bytes): an interrupted copy or '
                          'export; copy or export it again')
    try:
        # read with the message-hub records too (still data only), so that a training
        # checkpoint given by mistake is recognised in this one read
        payload = read_archive(path, MMENGINE_GLOBALS)
    except UnsafeCheckpointError as err:
        raise TicketError(f'{path!r} is not a readable ticket (refused, nothing in it was '
                          f'executed): {err}') from None
    if isinstance(payload, dict) and 'state_dict' in payload and 'meta' in payload and \
            not (isinstance(payload['meta'], dict) and
                 type(payload['meta'].get('format')) is str and
                 payload['meta']['format'] == TICKET_FORMAT):
        raise TicketError(
            f'{path!r} is a training checkpoint, not a ticket: dense backbone weights go into '
            '`init_cfg=dict(type="mmrecprune.StrictPretrained", prefix="backbone.", '
            'checkpoint=...)`, a whole trained model into `load_from`; a ticket is what a '
            'pruning run exports under work_dir/tickets/')
    return validate_ticket(payload, path)


def read_ticket_bytes(data, where):
    """A ticket (or ticket header) serialised by :func:`ticket_bytes`, checked like a file."""
    try:
        payload = read_archive(data)
    except UnsafeCheckpointError as err:
        raise TicketError(f'{where}: not a readable ticket header (refused, nothing in it was '
                          f'executed): {err}') from None
    return payload


def ticket_bytes(payload):
    """``payload`` as ``torch.save`` bytes (plain data: loads with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def validate_ticket(payload, path='<ticket>'):
    """A :class:`Ticket` from loaded data, checked against the ticket schema."""
    meta, state_dict, entries, structure = check_ticket_payload(payload, repr(path))
    masks, fills = {}, {}
    for name, entry in entries.items():
        try:
            masks[name] = unpack_mask(entry['bits'], list(entry['shape']))
        except ValueError as err:
            raise TicketError(f'{path!r}: mask {name!r} is corrupted: {err}') from None
        fill = entry.get('fill')
        if fill is not None:
            fills[name] = fill
        check_fill(name, state_dict[name], masks[name], fill, where=repr(path))
    return Ticket(meta=meta, state_dict=state_dict, masks=masks,
                  channel_structure=structure, fill_values=fills)


# -- export: the one way a pruner's result becomes a ticket ----------------------------------
def _conv_linear_weights(module):
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)))


def stage_out_channels(backbone_cfg, structure, x):
    """Output widths of every stage of the backbone built from ``backbone_cfg`` and slimmed to
    ``structure`` (``{}``: dense), for a neck's ``in_channels``."""
    from mmrecprune.sparsity import apply_channel_structure, inference_forward
    from mmrecprune.ticket_schema import build_ticket_backbone
    cfg = copy.deepcopy(backbone_cfg)
    if 'num_stages' in cfg:
        cfg['out_indices'] = tuple(range(cfg['num_stages']))
    net = build_ticket_backbone(cfg)
    apply_channel_structure(net, structure)
    outs = inference_forward(net, x.cpu())
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    return [int(o.shape[1]) for o in outs]


def export_ticket(path, pruner, backbone_cfg, input_shape=(1, 3, 224, 224), source=None,
                  prefix='backbone', plot=True):
    """Write the ticket of ``pruner``'s sub-module ``prefix`` (every hook, tool and test uses
    this), with the meta keys of the module docstring and a PNG beside it.

    Args:
        path (str): The ticket file, e.g. ``work_dir/tickets/round_3.pth``.
        pruner (BasePruner): An attached pruner; its :meth:`ticket_content` says what to store.
        backbone_cfg (dict): Config that builds the dense backbone (cleaned of ``init_cfg`` /
            ``pretrained``).
        input_shape (Sequence[int]): ``(1, C, H, W)`` the FLOPs are counted for.
        source (str, optional): The starting weights, for provenance.
        prefix (str): The pruned sub-module of ``pruner.model``. Defaults to ``'backbone'``
            (``''``: the pruner's model is the backbone itself).
        plot (bool): Also write ``<ticket>_sparsity.png`` (unstructured: per-layer sparsity) or
            ``<ticket>_channels.png`` (structured: kept channels per group).

    Returns:
        dict: The ticket's ``meta``.
    """
    from mmrecprune.sparsity import (count_flops_params, example_input, inference_forward,
                                     plot_kept_channels, plot_layer_sparsity, sparsity_report)
    content = pruner.ticket_content(prefix)
    # a model slimmed during training comes back at dense shapes as `dense_model`
    dense_model = content.get('dense_model', pruner.model)
    dense_backbone = dense_model.get_submodule(prefix)
    shape = tuple(int(v) for v in input_shape)
    flops_dense, params_dense = count_flops_params(dense_backbone, shape)
    backbone_cfg = clean_backbone_cfg(backbone_cfg)
    meta = step_meta(dict(content.get('meta', {}), input_shape=list(shape), source=str(source),
                          flops_dense=flops_dense, params_dense=params_dense))
    stem = osp.splitext(path)[0]
    if 'masks' in content:
        masks, fills = content['masks'], content.get('fill_values') or {}
        report = sparsity_report(masks)
        meta.update(flops=flops_dense, params=params_dense, prunable_params=report['total'],
                    pruned_params=report['total'] - report['kept'],
                    nonzero_params=params_dense - (report['total'] - report['kept']))
        if not fills:
            meta['flops_nonzero'] = count_flops_params(dense_backbone, shape,
                                                       nonzero_only=True)[0]
        save_ticket(path, backbone_cfg, dense_backbone.state_dict(), masks=masks,
                    fill_values=fills, **_ratios(meta))
        if plot:
            plot_layer_sparsity(report, f'{stem}_sparsity.png',
                                title=f'{meta.get("method")} step {meta.get("step")}: '
                                      f'{100 * report["sparsity"]:.1f} % sparse')
        return _ratios(meta)
    slim_model, structure = content['model'], content['channel_structure']
    x = example_input(shape, next(pruner.model.parameters()).device)
    dense_out, slim_out = inference_forward(dense_model, x), inference_forward(slim_model, x)
    if isinstance(dense_out, torch.Tensor) and not torch.allclose(dense_out, slim_out,
                                                                  rtol=1e-4, atol=1e-4):
        raise RuntimeError('the slimmed model does not compute what the masked one does '
                           f'(max diff {(dense_out - slim_out).abs().max():.3g})')
    slim_backbone = slim_model.get_submodule(prefix)
    flops, params = count_flops_params(slim_backbone, shape)
    prunable = _conv_linear_weights(dense_backbone)
    meta.update(flops=flops, params=params, prunable_params=prunable,
                pruned_params=prunable - _conv_linear_weights(slim_backbone),
                nonzero_params=params, flops_nonzero=flops)
    if meta.get('prune_residual'):
        meta['out_channels'] = stage_out_channels(backbone_cfg, structure, x)
        meta['dense_out_channels'] = stage_out_channels(backbone_cfg, {}, x)
    save_ticket(path, backbone_cfg, slim_backbone.state_dict(), channel_structure=structure,
                **_ratios(meta))
    if plot:
        plot_kept_channels(content['kept_widths'], f'{stem}_channels.png',
                           title=f'{meta.get("method")}: FLOPs {flops / flops_dense:.1%}, '
                                 f'params {params / params_dense:.1%} of dense')
    return _ratios(meta)


def _ratios(meta):
    return dict(meta, flops_ratio=meta['flops'] / meta['flops_dense'],
                params_ratio=meta['params'] / meta['params_dense'],
                sparsity=meta['pruned_params'] / max(meta['prunable_params'], 1))
