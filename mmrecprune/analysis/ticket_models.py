"""The backbones of a ticket or a config, built for measuring (the dense one and the pruned
one), and what a ticket keeps of its dense backbone (parameters, FLOPs, conv widths); used by
``tools/analysis_tools/analyze_ticket.py`` and the benchmarks."""
import os.path as osp

from torch.nn.modules.conv import _ConvNd

from mmrecprune.cli import CLIError, check_input_file, load_config
from mmrecprune.models.pruned_backbone import build_backbone_from_ticket
from mmrecprune.models.pruned_backbone.ticket_backbone import state_dict_bytes
from mmrecprune.sparsity import count_flops_params
from mmrecprune.ticket_schema import build_ticket_backbone
from mmrecprune.tickets import clean_backbone_cfg, load_ticket


#: the largest dense backbone built for a ticket unless asked for more (ResNet-152: 0.24 GB)
MAX_DENSE_GB = 4.0


def _build(cfg, max_gb=None):
    """The dense backbone of a config or ticket: one of the ticket schema's backbones, checked
    and built from its class (never from a name resolved by a registry). ``max_gb``: first
    measured on the meta device (nothing allocated) and refused above that size, since a
    ticket's config is the file's word: a structured ticket slimmed to a few MB may name a
    dense backbone of hundreds of GB."""
    cfg = clean_backbone_cfg(cfg)
    if max_gb is not None:
        size = state_dict_bytes(build_ticket_backbone(cfg, device='meta').state_dict())
        if size > max_gb * 2 ** 30:
            raise CLIError(
                f'the ticket\'s dense backbone ({cfg["type"]}, '
                + ', '.join(f'{k}={cfg[k]}' for k in ('depth', 'base_channels', 'widen_factor')
                            if k in cfg)
                + f') takes {size / 2 ** 30:.1f} GB, over the {max_gb:g} GB this analysis '
                'builds; if the file is yours and the memory is there, pass --max-dense-gb')
    return build_ticket_backbone(cfg)


def load_models(path, cfg_options=None, max_dense_gb=MAX_DENSE_GB):
    """``(dense backbone, pruned backbone or None, ticket or None)`` for a config (with
    ``cfg_options`` merged) or a ticket; a ticket's dense backbone is built only up to
    ``max_dense_gb`` (``CLIError`` above it; None: any size)."""
    check_input_file(path, 'config or ticket')
    if osp.splitext(path)[1] in ('.py', '.json', '.yaml', '.yml'):
        backbone = load_config(path, cfg_options).get('model', {}).get('backbone')
        if not isinstance(backbone, dict):
            raise CLIError(f'config {path} has no model.backbone to analyse')
        cfg = backbone.to_dict() if hasattr(backbone, 'to_dict') else dict(backbone)
        if 'ticket' not in cfg:
            return _build(cfg), None, None
        path = cfg['ticket']
    elif cfg_options:
        raise CLIError(f'--cfg-options apply to a config; {path} is a ticket (no config)')
    ticket = load_ticket(path)
    # the pruned one first: its build checks the config against the ticket's weights before
    # allocating, so a config wider than the file's weights is refused before the dense build
    pruned = build_backbone_from_ticket(ticket)
    dense = _build(ticket.backbone_cfg, max_dense_gb)
    return dense, pruned, ticket


def conv_widths(dense, slim):
    """``{conv name: (kept, dense)}`` output channels of every conv layer."""
    slim_modules = dict(slim.named_modules())
    return {name: (slim_modules[name].out_channels, m.out_channels)
            for name, m in dense.named_modules() if isinstance(m, _ConvNd)}


def ticket_costs(ticket_path, input_shape=(1, 3, 56, 56)):
    """``(kept params %, kept FLOPs %)`` of a ticket's backbone against its dense backbone
    (unstructured and 2:4: non-zero weights; their FLOPs stay dense on ordinary hardware)."""
    dense, pruned, ticket = load_models(ticket_path)
    dense_flops, dense_params = count_flops_params(dense, input_shape)
    if ticket.masks:  # unstructured and nm: the masks count (on-the-fly fills are not zeros)
        pruned_entries = sum(int((~m).sum()) for m in ticket.masks.values())
        return 100 * (dense_params - pruned_entries) / dense_params, 100.0
    flops, params = count_flops_params(pruned, input_shape)
    return 100 * params / dense_params, 100 * flops / dense_flops
