"""The stand-in for a ticket backbone whose ticket file is missing: the checkpoint being
loaded carries the ticket and builds the real backbone."""
import torch
from mmengine.logging import print_log
from torch import nn

from mmrecprune.tickets import TICKET_STATE_KEY, TicketError, validate_ticket
from .carried_ticket import attach_ticket_state, read_header, ticket_header
from .ticket_backbone import assemble_backbone


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
        real = assemble_backbone(ticket, self.keep_masks, self.behaviour, attach=False,
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
