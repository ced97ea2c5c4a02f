"""``mmrecprune.PrunedBackbone``: the backbone of a ticket, inside any mmdet / mmseg config.

Structure (widths, masks) and weights come from the ticket; behaviour (out_indices, frozen
stages, norm config, strides / dilations) from the config. The built backbone is the ticket's
own registered type (e.g. ``mmdet.ResNet``), so state_dict keys are those of a dense backbone.

A model trained on a ticket carries the ticket's structure in its own checkpoint: the backbone
adds one entry, ``<prefix>ticket``, to its state_dict: a uint8 tensor holding the ticket header
(meta, channel structure, packed masks) as ``torch.save`` bytes of plain data, so every
state_dict entry is a tensor (EMA, averaging and conversion tools assume it). Reading it back
goes through the same reader and schema as a ticket file. When the ticket file named in the
config is gone (the detector was copied to another machine), the backbone is built lazily from
that entry while the checkpoint loads, so ``init_detector``, ``DetInferencer``,
``tools/test.py`` and mmseg's ``init_model`` work with the checkpoint alone.

One module per part: :mod:`.builder` (the registered entry and its options),
:mod:`.ticket_backbone` (building a loaded ticket's backbone), :mod:`.transfer` (other weights
or a random mask), :mod:`.carried_ticket` (the header in checkpoints), :mod:`.deferred` (a
missing ticket file), :mod:`.consumer_widths` (the neck's widths checked).
"""
from .builder import (BEHAVIOUR_KEYS, IGNORED_KEYS, build_backbone_from_ticket,
                      check_semi_structured)
from .carried_ticket import attach_ticket_state, header_tensor, read_header, ticket_header
from .consumer_widths import check_consumer_widths_once, stage_widths
from .deferred import DeferredTicketBackbone
from .ticket_backbone import assemble_backbone
from .transfer import transfer_ticket

__all__ = ['build_backbone_from_ticket', 'BEHAVIOUR_KEYS', 'IGNORED_KEYS',
           'check_semi_structured', 'assemble_backbone', 'transfer_ticket', 'stage_widths',
           'check_consumer_widths_once', 'ticket_header', 'attach_ticket_state', 'header_tensor',
           'read_header', 'DeferredTicketBackbone']
