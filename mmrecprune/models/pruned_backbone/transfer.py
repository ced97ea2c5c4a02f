"""Mask transfer: a ticket with other starting weights (random, or a dense checkpoint's) and
/ or a random mask of the same per-layer sparsity."""
import os.path as osp

import torch

from mmrecprune.tickets import Ticket, TicketError
from .ticket_backbone import assemble_backbone


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
        net = assemble_backbone(Ticket(meta=ticket.meta, state_dict=ticket.state_dict,
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
