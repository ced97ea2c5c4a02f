"""The ticket travels in the model's checkpoints: its header (meta, channel structure, packed
masks) as one uint8 state_dict entry, written on save and checked on load."""
import copy
import logging

import torch
from mmengine.logging import print_log

from mmrecprune.sparsity import pack_mask
from mmrecprune.ticket_schema import check_ticket_header
from mmrecprune.tickets import (TICKET_STATE_KEY, TicketError, read_ticket_bytes, ticket_bytes,
                                ticket_step)


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
                f'{saved["meta"].get("method")!r}, step {ticket_step(saved["meta"])!r}) with '
                f'other channel widths than `ticket` in the config '
                f'({own["meta"].get("method")!r}, step {ticket_step(own["meta"])!r}); point '
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
