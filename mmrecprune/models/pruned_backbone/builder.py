"""``build_backbone_from_ticket``, registered as ``mmrecprune.PrunedBackbone``: the options a
config may give, checked, and the ticket loaded, transferred or deferred."""
import os.path as osp

from mmengine.logging import print_log

from mmrecprune.registry import MODELS
from mmrecprune.tickets import Ticket, TicketError, load_ticket
from .deferred import DeferredTicketBackbone
from .ticket_backbone import assemble_backbone
from .transfer import transfer_ticket

#: Options a downstream config may set; everything that defines the structure (depth, widths,
#: stem) comes from the ticket.
BEHAVIOUR_KEYS = ('out_indices', 'frozen_stages', 'norm_cfg', 'norm_eval', 'strides',
                  'dilations', 'with_cp', 'style', 'contract_dilation')
#: Set by shipped configs (mmseg pushes its model-level ``pretrained`` into the backbone); a
#: ticket holds its weights, so these are accepted and ignored with a log line.
IGNORED_KEYS = ('pretrained', 'init_cfg')


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
    return assemble_backbone(ticket, keep_masks, options, semi_structured=semi_structured)


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


MODELS.register_module(name='PrunedBackbone', module=build_backbone_from_ticket)
