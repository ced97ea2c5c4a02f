"""The ticket file: one weights-only checkpoint that fully describes a pruned backbone.

Layout (only dicts, lists, str, int, float, bool, None and tensors, so it loads with
``torch.load(weights_only=True)`` and loading never unpickles arbitrary objects)::

    {'meta': {'format': 'mmrecprune-ticket', 'version': 1,
              'kind': 'unstructured' | 'structured' | 'dense',
              'backbone': <backbone config dict>, 'method': str, 'round': int,
              'sparsity': float, 'flops': int, 'params': int, 'source': str, ...},
     'state_dict': {name: tensor},                # backbone weights (slim if structured)
     'masks': {name: {'bits': uint8, 'shape': [...]}},   # unstructured: packed masks
     'channel_structure': {module: {'in': c, 'out': c}}} # structured: the slim widths
"""
import copy
import os
import os.path as osp
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field

import torch

from mmrecprune.checkpoint_safety import load_mmengine_checkpoint, refusal_reason
from mmrecprune.sparsity import pack_mask, unpack_mask

TICKET_FORMAT = 'mmrecprune-ticket'
TICKET_VERSION = 1
TICKET_KINDS = ('unstructured', 'structured', 'dense')


class TicketError(ValueError):
    """A file that is not a usable ticket (wrong format, corrupted, mismatched)."""


@dataclass
class Ticket:
    """A loaded ticket. ``masks`` are unpacked bool tensors keyed like ``state_dict``."""
    meta: dict
    state_dict: dict
    masks: dict = field(default_factory=dict)
    channel_structure: dict = field(default_factory=dict)

    @property
    def kind(self):
        return self.meta['kind']

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


def clean_backbone_cfg(cfg):
    """The backbone config a ticket stores and builds from: a plain dict without ``init_cfg``
    / ``pretrained`` (a ticket holds its weights; nothing may load others over them)."""
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else copy.deepcopy(dict(cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


def save_ticket(path, backbone_cfg, state_dict, masks=None, channel_structure=None, **meta):
    """Write a ticket atomically (a failed write never leaves a half-written ``path``).

    Args:
        path (str): output file.
        backbone_cfg (dict): config that builds the dense backbone (e.g. ``mmdet.ResNet``);
            stored through :func:`clean_backbone_cfg`.
        state_dict (dict): backbone weights, keys relative to the backbone.
        masks (dict, optional): unstructured masks (bool tensors) for some weights.
        channel_structure (dict, optional): slim widths from
            :func:`mmrecprune.sparsity.slim_model`.
        **meta: provenance (method, round, sparsity, flops, params, source, ...).
    """
    if masks and channel_structure:
        raise TicketError('a ticket is either unstructured (masks) or structured '
                          '(channel_structure), not both')
    kind = 'unstructured' if masks else 'structured' if channel_structure else 'dense'
    # tensors only: a backbone built from a ticket also saves its ticket header (a dict)
    state_dict = {k: v.detach().cpu().clone() for k, v in state_dict.items()
                  if isinstance(v, torch.Tensor)}
    packed = {}
    for name, mask in (masks or {}).items():
        if name not in state_dict or state_dict[name].shape != mask.shape:
            raise TicketError(f'mask {name!r} does not match any weight of the same shape')
        packed[name] = dict(bits=pack_mask(mask.cpu()), shape=list(mask.shape))
    payload = dict(
        meta=_plain(dict(meta, format=TICKET_FORMAT, version=TICKET_VERSION, kind=kind,
                         backbone=clean_backbone_cfg(backbone_cfg))),
        state_dict=state_dict, masks=packed, channel_structure=_plain(channel_structure or {}))
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _training_checkpoint_hint(path):
    """What to do with ``path`` if it is an MMEngine training checkpoint, else ''."""
    try:
        ckpt = load_mmengine_checkpoint(path, map_location='cpu')
    except Exception:  # refused or unreadable: the caller reports the weights-only refusal
        return ''
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
        return ''
    return (f'{path!r} is a training checkpoint, not a ticket: dense backbone weights go into '
            '`init_cfg=dict(type="mmrecprune.StrictPretrained", prefix="backbone.", '
            'checkpoint=...)`, a whole trained model into `load_from`; a ticket is what a '
            'pruning run exports under work_dir/tickets/')


def load_ticket(path):
    """Load and validate a ticket with ``weights_only=True``; raise :class:`TicketError`."""
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
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since 1.6
        raise TicketError(f'{path!r} is not a readable ticket (truncated or corrupted file?): '
                          'it is not a PyTorch zip archive')
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        hint = _training_checkpoint_hint(path)
        if hint:
            raise TicketError(hint) from None
        raise TicketError(
            f'{path!r} is not a ticket: it holds objects that a weights-only load refuses '
            f'(refused, nothing was executed): {refusal_reason(err)}') from None
    except Exception as err:  # truncated / corrupted zip or pickle data: many error types
        raise TicketError(f'{path!r} is not a readable ticket (truncated or corrupted file?): '
                          f'{_first_line(err)}') from None
    return validate_ticket(payload, path)


def validate_ticket(payload, path='<ticket>'):
    if not isinstance(payload, dict) or not isinstance(payload.get('meta'), dict) or \
            payload['meta'].get('format') != TICKET_FORMAT:
        raise TicketError(f'{path!r} is not an mmrecprune ticket (no "{TICKET_FORMAT}" header); '
                          'a training checkpoint goes into `init_cfg=dict(type="Pretrained")`, '
                          'a ticket into `type="mmrecprune.PrunedBackbone"`')
    meta = payload['meta']
    if meta.get('version', 0) > TICKET_VERSION:
        raise TicketError(f'{path!r} has ticket format version {meta.get("version")}, this '
                          f'mmrecprune reads up to {TICKET_VERSION}; upgrade mmrecprune')
    if meta.get('kind') not in TICKET_KINDS or not isinstance(meta.get('backbone'), dict):
        raise TicketError(f'{path!r}: ticket header lacks a valid kind / backbone config')
    state_dict = payload.get('state_dict')
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TicketError(f'{path!r}: ticket has no tensor state_dict')
    masks = {}
    for name, entry in (payload.get('masks') or {}).items():
        weight = state_dict.get(name)
        shape = list(entry.get('shape', [])) if isinstance(entry, dict) else None
        if weight is None or shape != list(weight.shape):
            raise TicketError(f'{path!r}: mask {name!r} (shape {shape}) does not match the '
                              'ticket weights; the file is corrupted or was edited')
        try:
            masks[name] = unpack_mask(entry['bits'], shape)
        except ValueError as err:
            raise TicketError(f'{path!r}: mask {name!r} is corrupted: {err}') from None
        if weight[~masks[name]].any():
            raise TicketError(f'{path!r}: weight {name!r} is non-zero where its mask prunes it')
    return Ticket(meta=meta, state_dict=state_dict, masks=masks,
                  channel_structure=payload.get('channel_structure') or {})
