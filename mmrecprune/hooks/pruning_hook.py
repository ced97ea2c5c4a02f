"""What the pruning hooks share: building the pruner from its config (of the family the hook
drives), attaching it to the model and the optimizer wrapper, and carrying its state through
checkpoints."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from mmrecprune.models.slim_task_model import pruned_view
from mmrecprune.models.starting_weights import adapt_starting_weights
from mmrecprune.methods.base import BasePruner, ChannelPruner, family_of
from mmrecprune.optim import PruningUpdateMixin
from mmrecprune.registry import HOOKS, PRUNERS
from mmrecprune.sparsity import example_input


def build_pruner(cfg, owner):
    """Build a pruner config; a bad argument raises ValueError naming the hook and the pruner."""
    cfg = dict(cfg)
    kind = cfg.get('type')
    try:
        return PRUNERS.build(cfg)
    except TypeError as err:  # an argument the pruner does not take
        raise ValueError(f'{owner}: pruner {kind}: {err}') from None
    except KeyError as err:
        raise ValueError(f'{owner}: unknown pruner type {kind!r} ({err}); registered: '
                         f'{sorted(PRUNERS.module_dict)}') from None


def _article(noun):
    return 'an' if noun[:1] in 'aeiu' else 'a'


def family_mismatch(hook_cls, pruner_cls):
    """The one-line message refusing ``pruner_cls`` in ``hook_cls``, or None if the hook
    drives it: names the pruners the hook drives, the pruner's own family and the registered
    hook(s) that drive it."""
    protocol = hook_cls.pruner_protocol
    if issubclass(pruner_cls, protocol):
        return None
    own = sorted(name for name, cls in PRUNERS.module_dict.items()
                 if isinstance(cls, type) and issubclass(cls, protocol))
    family = family_of(pruner_cls)
    hooks = sorted(name for name, cls in HOOKS.module_dict.items()
                   if isinstance(cls, type) and issubclass(cls, PruningHook)
                   and family is not None and cls.pruner_protocol is not BasePruner
                   and issubclass(pruner_cls, cls.pruner_protocol))
    drives = f'{hook_cls.__name__} drives {protocol.family} pruners ({", ".join(own)})'
    if family is None:
        return (f'{drives}; {pruner_cls.__name__} implements none of the pruner families of '
                'mmrecprune.methods.base (IterativePruner, RetrainingFreePruner, '
                'ChannelPruner): subclass the one it belongs to')
    return (f'{drives}; {pruner_cls.__name__} is {_article(family.family)} {family.family} '
            f'pruner' + (f': use {" or ".join(hooks)}' if hooks else ''))


class PruningHook(Hook):
    """Base of the pruning hooks: they decide *when*; the pruner decides *what*.

    The pruner lives through a run as MMEngine's ``EMAHook`` keeps its EMA model:

    * ``__init__`` builds it from its config (arguments checked before a runner exists);
    * ``before_run`` of a training run attaches it to the runner's model (tracing and selecting
      what can be pruned reads the model's structure, not its weights, which load later) and
      serves it from the optimizer wrapper;
    * ``after_load_checkpoint`` of a resumed run loads the checkpoint's pruner state into it
      right away (before the runner loads the weights and the optimizer state); ``load_from``
      alone starts a new run, whose starting weights are checked
      (:func:`~mmrecprune.models.starting_weights.adapt_starting_weights`);
    * ``before_train`` takes what depends on the loaded weights and is not in a checkpoint (e.g.
      the rewind target of a run that did not resume; :attr:`resumed` tells);
    * ``before_save_checkpoint`` writes the pruner state under :attr:`state_key`.

    Subclasses set ``pruner_protocol`` (the family of pruners they drive, a protocol class of
    :mod:`mmrecprune.methods.base` that declares every attribute the hook reads) and
    ``state_key``. A pruner config of another family is refused when the hook is built, with a
    one-line ValueError naming both.
    """
    priority = 'LOW'  # after the param scheduler, before the checkpoint hook (VERY_LOW)
    state_key = 'pruning'
    pruner_protocol = BasePruner

    def __init__(self, pruner, example_input_shape=(1, 3, 224, 224)):
        shape = tuple(example_input_shape)
        if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
            raise ValueError(f'example_input_shape must be (1, C, H, W), got {example_input_shape}')
        self.example_input_shape = shape
        self.pruner_cfg = dict(pruner)
        # refuse another family before its arguments are checked, and once more once built
        # (a type given as a class, or a scoped name)
        self._check_family(self.pruner_cfg.get('type'))
        self.pruner = build_pruner(self.pruner_cfg, type(self).__name__)
        self._check_family(type(self.pruner))
        #: whether the pruner state came from the checkpoint of a resumed run
        self.resumed = False

    def _check_family(self, pruner_type):
        cls = PRUNERS.get(pruner_type) if isinstance(pruner_type, str) else pruner_type
        if isinstance(cls, type):
            message = family_mismatch(type(self), cls)
            if message is not None:
                raise ValueError(message)

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def is_training(runner):
        """Whether ``runner`` is starting ``train()`` (which builds its train loop before
        ``before_run``); ``val()`` and ``test()`` call ``before_run`` too, and prune nothing."""
        return isinstance(runner._train_loop, BaseLoop)

    def _example_input(self, model):
        return example_input(self.example_input_shape, next(model.parameters()).device)

    def before_run(self, runner):
        if self.is_training(runner) and self.pruner.model is None:
            self.check_schedule(runner)
            self.attach_pruner(runner)

    def check_schedule(self, runner):
        """Refuse, before anything loads, a schedule that does not fit the run (subclasses)."""

    def attach_pruner(self, runner):
        """Attach the pruner to the model and serve it from the optimizer wrapper."""
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, PruningUpdateMixin):
            raise TypeError(f'{type(self).__name__} needs optim_wrapper=dict(type='
                            '"mmrecprune.PruningOptimWrapper", ...) (or its Amp twin; the old '
                            'names MaskedOptimWrapper / ProtectiveOptimWrapper work too) to '
                            f'keep pruned weights at zero; got {type(wrapper).__name__}')
        model = self._model(runner)
        if not hasattr(model, 'backbone'):
            raise TypeError(f'{type(self).__name__} prunes `model.backbone`; '
                            f'{type(model).__name__} has none')
        # a channel pruner traces model(x); a two-stage detector's needs data samples, so it
        # traces the backbone and neck it prunes (same modules, same names)
        traced = pruned_view(model) if isinstance(self.pruner, ChannelPruner) else model
        self.pruner.attach(traced, self._example_input(model))
        self.resumed = False
        wrapper.attach(self.pruner)

    @staticmethod
    def publish(runner, logged, plotted):
        """Report a pruning step: ``logged`` scalars join the training log lines (message hub,
        ``train/`` keys), ``logged`` and ``plotted`` go to every visualizer backend (e.g.
        TensorBoard) under ``pruning/``, at the current iteration."""
        for key, value in logged.items():
            runner.message_hub.update_scalar(f'train/{key}', value)
        scalars = {f'pruning/{k}': float(v) for k, v in {**logged, **plotted}.items()}
        runner.visualizer.add_scalars(scalars, step=runner.iter)

    def load_resumed_state(self, runner, state):
        """Load a resumed checkpoint's ``state`` into the attached pruner (the model's weights
        and the optimizer state load right after)."""
        self.pruner.load_state_dict(state)

    def saved_state(self):
        return self.pruner.state_dict()

    def before_save_checkpoint(self, runner, checkpoint):
        if self.pruner.model is not None:
            checkpoint[self.state_key] = self.saved_state()

    def after_load_checkpoint(self, runner, checkpoint):
        # Only a resumed run continues the pruning state; `load_from` alone starts a new run
        # from the checkpoint's weights.
        if not getattr(runner, '_resume', False):
            adapt_starting_weights(self._model(runner), checkpoint,
                                   f'load_from={runner._load_from}')
            return
        state = checkpoint.get(self.state_key)
        if state is not None and self.pruner.model is not None:
            self.load_resumed_state(runner, state)
            self.resumed = True
