"""A detector or segmentor whose backbone was pruned in its own training run (in-task pruning),
written so that its config alone builds it.

After an in-task run (a pruning hook in an mmdet / mmseg training config) the hook calls
:func:`write_task_model`, which slims the model with the pruner's result and, like
:func:`save_task_model` for any slim model (e.g. one pruned without training), writes next to
the ticket:

* ``<stem>_model.pth``: the whole model's weights, backbone slimmed (structured) or masked
  (unstructured), neck / head input convs slimmed where residual channels were pruned, plus
  the ticket header the backbone carries (``backbone.ticket``). Plain data only (loads with
  ``torch.load(weights_only=True)`` and through :mod:`mmrecprune.fileio`); ``meta`` holds the
  dataset's class names (``init_detector`` / ``init_model`` read them) and the ticket's meta.
* ``<stem>_model.py``: the run's config with ``model.backbone`` replaced by
  ``mmrecprune.PrunedBackbone`` on the ticket (behaviour keys such as ``out_indices``,
  ``frozen_stages``, ``norm_eval``, dilations kept from the run's backbone), the neck's or
  heads' ``in_channels`` set to the slim backbone's output widths, the pruning hooks removed
  and ``load_from`` / ``resume`` cleared.

``init_detector(config, checkpoint)``, ``tools/test.py config checkpoint`` and
``tools/deployment/pytorch2onnx.py config checkpoint`` then work with these two files. If the
ticket file has moved, the backbone is built from the header the checkpoint carries (see
:class:`~mmrecprune.models.pruned_backbone.DeferredTicketBackbone`).

:func:`pruned_view` is what a channel pruner traces in a two-stage detector, whose forward
needs data samples: the backbone and the neck, sharing the model's modules and names.
"""
import copy
import os.path as osp

import torch
from torch import nn

from mmrecprune.models.pruned_backbone import (BEHAVIOUR_KEYS, build_backbone_from_ticket,
                                               stage_widths)
from mmrecprune.tickets import (TicketError, load_ticket, plain_values, ticket_bytes,
                                write_atomically)

#: hooks that prune; the written config trains / tests the slim model without them
PRUNING_HOOKS = ('LotteryTicketHook', 'StructuredPruningHook', 'OnTheFlyPruningHook')


class ImageForward(nn.Module):
    """The modules of a task model that take the backbone's outputs from an image alone, as one
    module: ``forward(x)`` runs the backbone, the neck if any, and (without a neck) every
    segmentation head on the features, the auxiliary ones included. Its children *are* the
    model's (same objects, same names), so masks, slimming and state computed on it apply to
    the model."""

    def __init__(self, model):
        super().__init__()
        self.backbone = model.backbone
        for name in ('neck', 'decode_head', 'auxiliary_head'):
            if getattr(model, name, None) is not None:
                self.add_module(name, getattr(model, name))
        if 'neck' in self._modules:  # the heads take the neck's outputs, not the backbone's
            self._modules.pop('decode_head', None)
            self._modules.pop('auxiliary_head', None)

    def forward(self, x):
        x = self.backbone(x)
        if 'neck' in self._modules:
            return self.neck(x)
        heads = [self._modules.get('decode_head'), self._modules.get('auxiliary_head')]
        heads = [h for head in heads if head is not None
                 for h in (head if isinstance(head, nn.ModuleList) else [head])]
        return [head(x) for head in heads]


def needs_image_forward(model):
    """Whether ``model(x)`` on an image tensor misses modules that take the backbone's outputs,
    or cannot run at all: mmdet's two-stage detectors (an ``rpn_head`` or ``roi_head``), whose
    tensor forward needs data samples, and mmseg's segmentors with an ``auxiliary_head``, which
    their tensor forward skips."""
    two_stage = getattr(model, 'neck', None) is not None and (
        getattr(model, 'rpn_head', None) is not None
        or getattr(model, 'roi_head', None) is not None)
    return two_stage or getattr(model, 'auxiliary_head', None) is not None


def pruned_view(model):
    """What a channel pruner traces and slims: ``model``, or :class:`ImageForward` of it when
    ``model(x)`` would miss a consumer of the backbone's outputs (:func:`needs_image_forward`),
    so that pruning residual channels slims every module that reads them."""
    return ImageForward(model) if needs_image_forward(model) else model


def is_task_model(model):
    """Whether ``model`` is an mmdet detector or an mmseg segmentor (each package optional)."""
    kinds = []
    try:
        from mmdet.models.detectors import BaseDetector
        kinds.append(BaseDetector)
    except ImportError:
        pass
    try:
        from mmseg.models.segmentors import BaseSegmentor
        kinds.append(BaseSegmentor)
    except ImportError:
        pass
    return bool(kinds) and isinstance(model, tuple(kinds))


def slim_whole_model(model, pruner):
    """A copy of ``model`` (unwrapped) with the pruner's result in it: for a channel pruner, the
    slim copy of what it traced (the model, or the modules of :func:`pruned_view`) takes the
    place of those modules; for a weight-mask pruner, the masked weights as they are. ``model``
    is unchanged."""
    if pruner.kind != 'structured':
        return copy.deepcopy(model)
    slim, _ = pruner.slim_copy()
    if pruner.model is model:
        return slim
    # deep-copy the rest of the model, reusing the slim copies of the traced children
    memo = {id(getattr(model, name)): child for name, child in slim.named_children()}
    return copy.deepcopy(model, memo)


def backbone_behaviour(backbone_cfg):
    """The keys of the run's backbone config that a ``PrunedBackbone`` takes from its config
    (structure comes from the ticket)."""
    cfg = backbone_cfg.to_dict() if hasattr(backbone_cfg, 'to_dict') else dict(backbone_cfg)
    return {k: copy.deepcopy(cfg[k]) for k in BEHAVIOUR_KEYS if k in cfg}


def set_consumer_in_channels(model_cfg, widths):
    """Set, in a model config, ``in_channels`` of what takes the backbone's outputs to their
    slim ``widths`` (``out_indices`` order): the neck's list, or without a neck each decode /
    auxiliary head's by its ``in_index`` (mmseg's default: -1)."""
    neck = model_cfg.get('neck')
    if neck is not None:
        channels = neck.get('in_channels')
        if isinstance(channels, (list, tuple)) and len(channels) == len(widths):
            neck['in_channels'] = list(widths)
        return
    for key in ('decode_head', 'auxiliary_head'):
        heads = model_cfg.get(key)
        for head in heads if isinstance(heads, (list, tuple)) else [heads]:
            if isinstance(head, dict) and 'in_channels' in head:
                index = head.get('in_index', -1)
                head['in_channels'] = ([widths[i] for i in index]
                                       if isinstance(index, (list, tuple)) else widths[index])


def task_config(cfg, ticket_path, widths=None):
    """The run's config (a copy) for the slim model: ``PrunedBackbone`` on ``ticket_path``, the
    neck's (or, without a neck, the heads') ``in_channels`` set to ``widths`` (the backbone's
    output widths, ``out_indices`` order; None: unchanged), no pruning hooks, no ``load_from``
    / ``resume``."""
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    model.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=ticket_path,
                          **backbone_behaviour(model.backbone))
    if model.get('pretrained') is not None:
        model.pretrained = None  # mmseg pushes it into the backbone; the ticket holds weights
    if widths is not None:
        set_consumer_in_channels(model, widths)
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if str(h.get('type', '')).rpartition('.')[2] not in PRUNING_HOOKS]
    cfg.load_from = None
    cfg.resume = False
    cfg.pop('work_dir', None)
    imports = cfg.get('custom_imports', {}).get('imports', [])
    if 'mmrecprune' not in imports:
        cfg.custom_imports = dict(imports=list(imports) + ['mmrecprune'],
                                  allow_failed_imports=False)
    return cfg


def _outputs_close(a, b, atol=1e-4):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(
            a, b, rtol=1e-4, atol=atol)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_outputs_close(x, y, atol) for x, y in zip(a, b))
    return True


def write_task_model(model, pruner, ticket_path, cfg, dataset_meta=None, input_shape=None,
                     meta=None):
    """Slim the run's model with the pruner's result and write it next to ``ticket_path``
    (:func:`save_task_model`); returns ``(config, checkpoint)``.

    Args:
        model (nn.Module): The run's model (unwrapped), pruning finished (masks hard-applied).
        pruner (BasePruner): The attached pruner.
        ticket_path (str): The ticket the hook exported for this model's backbone.
        cfg (Config): The run's config.
        dataset_meta (dict, optional): Class names (and palette) for the checkpoint's meta.
        input_shape (Sequence[int], optional): ``(1, C, H, W)``: the model the written config
            builds, with the written weights, is checked against the pruned model on one such
            input (:func:`check_written_model`).
        meta (dict, optional): More provenance for the checkpoint's meta (epoch, iter, ...).

    Raises:
        RuntimeError: the written config and weights do not build the pruned model.
    """
    return save_task_model(slim_whole_model(model, pruner), ticket_path, cfg, dataset_meta,
                           meta, reference=model, input_shape=input_shape)


def save_task_model(slim, ticket_path, cfg, dataset_meta=None, meta=None, reference=None,
                    input_shape=None):
    """Write a slim task model (its backbone the one ``ticket_path`` holds) as
    ``<ticket>_model.pth`` and the config that builds it as ``<ticket>_model.py``; returns
    ``(config, checkpoint)``. ``slim`` is changed: its backbone becomes the ticket's
    ``PrunedBackbone``. With ``reference`` (the pruned model, dense shapes allowed) and
    ``input_shape``, the written files are checked against it (:func:`check_written_model`).

    Raises:
        RuntimeError: the ticket does not hold ``slim``'s backbone, or the written files do not
            build ``reference``.
    """
    behaviour = backbone_behaviour(cfg.model.backbone)
    dense_widths = stage_widths(reference.backbone if reference is not None else slim.backbone)
    # the backbone the written config builds: the ticket's, with its header in the state dict
    slim_backbone = slim.backbone
    slim.backbone = build_backbone_from_ticket(ticket_path, **behaviour)
    own, expected = slim.backbone.state_dict(), slim_backbone.state_dict()
    for name, value in expected.items():
        if not torch.equal(own[name].cpu(), value.detach().cpu()):
            raise RuntimeError(f'the ticket {ticket_path} does not hold the slim backbone\'s '
                               f'{name}')
    slim.backbone.to(next(slim_backbone.parameters()).device)
    widths = stage_widths(slim.backbone)
    stem = osp.splitext(ticket_path)[0]
    config_path, checkpoint_path = f'{stem}_model.py', f'{stem}_model.pth'
    new_cfg = task_config(cfg, ticket_path, widths if widths != dense_widths else None)
    state = {k: v.detach().cpu().clone() for k, v in slim.state_dict().items()}
    payload = dict(
        meta=plain_values(dict(meta or {}, dataset_meta=_plain_entries(dataset_meta or {}),
                               ticket=load_ticket(ticket_path).meta,
                               config=osp.basename(config_path),
                               backbone_out_channels=widths, dense_out_channels=dense_widths)),
        state_dict=state)
    write_atomically(checkpoint_path, ticket_bytes(payload))
    new_cfg.dump(config_path)
    if reference is not None and input_shape is not None:
        check_written_model(config_path, state, reference, input_shape)
    return config_path, checkpoint_path


def _plain_entries(mapping):
    """The entries of ``mapping`` that are plain data (a data set's metainfo may hold others)."""
    out = {}
    for key, value in dict(mapping).items():
        try:
            out[str(key)] = plain_values(value)
        except TicketError:
            continue
    return out


def build_written_model(config_path, state_dict):
    """The model a written config builds (in its default scope, SyncBN as BN, as
    ``init_detector`` / ``init_model`` build it) with ``state_dict`` loaded strictly."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from mmrecprune.registry import MODELS
    cfg = Config.fromfile(config_path)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        built = revert_sync_batchnorm(MODELS.build(cfg.model))
    built.load_state_dict(dict(state_dict), strict=True)
    return built


def check_written_model(config_path, state_dict, model, input_shape):
    """Raise RuntimeError unless the model the written config builds, with the written weights,
    computes what the pruned ``model`` computes on one ``input_shape`` input (the features its
    image-only forward reaches: :func:`pruned_view`)."""
    from mmrecprune.sparsity import example_input, inference_forward
    try:
        built = build_written_model(config_path, state_dict)
    except (RuntimeError, KeyError, ValueError) as err:
        raise RuntimeError(f'the written config {config_path} does not build a model that '
                           f'takes the slim weights: {err}') from None
    x = example_input(tuple(input_shape))
    device = next(model.parameters()).device
    expected = _to_cpu(inference_forward(pruned_view(model), x.to(device)))
    if not _outputs_close(expected, inference_forward(pruned_view(built), x)):
        raise RuntimeError(f'the slim model of {config_path} does not compute what the pruned '
                           'model does')


def _to_cpu(out):
    if isinstance(out, torch.Tensor):
        return out.cpu()
    if isinstance(out, (list, tuple)):
        return [_to_cpu(o) for o in out]
    return out


def write_runner_task_model(runner, pruner, ticket_path, input_shape=None):
    """:func:`write_task_model` for a runner's model, config and training data set, if the
    model is a detector or segmentor (else nothing; returns None). Logs what it wrote."""
    from mmengine.model import is_model_wrapper
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if not is_task_model(model):
        return None
    dataset = getattr(runner.train_dataloader, 'dataset', None)
    config, checkpoint = write_task_model(
        model, pruner, ticket_path, runner.cfg, getattr(dataset, 'metainfo', None),
        input_shape, meta=dict(epoch=runner.epoch, iter=runner.iter))
    runner.logger.info(f'slim {type(model).__name__} written: {checkpoint} with its config '
                       f'{config}; e.g. python tools/test.py {config} {checkpoint}')
    return config, checkpoint
