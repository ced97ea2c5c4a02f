"""Child registries of MMEngine's roots, in the scope ``mmrecprune``.

``locations`` lets a registry import the modules that fill it on first use, so both
``type='mmrecprune.X'`` from an mmdet / mmseg config and
``custom_imports=dict(imports=['mmrecprune'])`` resolve every module. Roots the plugin adds
nothing to still get a child, so a runner with ``default_scope='mmrecprune'`` finds MMEngine's
loops, samplers, visualizers, ... without scope-fallback warnings.

The plugin's own roots: ``PRUNERS`` (methods, built by the pruning hooks) and ``CRITERIA`` (what
matters: the ``importance=`` of every pruner), which is seeded from the engine's plain table
(:data:`mmrecprune.sparsity.CRITERION_TYPES`), so ``importance=dict(type='mmrecprune.Taylor')``
and a plugin's own ``@CRITERIA.register_module()`` class both build.
"""
from mmengine import registry as root
from mmengine.registry import Registry, build_from_cfg


def _child(parent, location=None):
    return Registry(parent.name, parent=parent, scope='mmrecprune',
                    locations=[location] if location else [])


MODELS = _child(root.MODELS, 'mmrecprune.models')
HOOKS = _child(root.HOOKS, 'mmrecprune.hooks')
OPTIM_WRAPPERS = _child(root.OPTIM_WRAPPERS, 'mmrecprune.optim')
DATASETS = _child(root.DATASETS, 'mmrecprune.datasets')
TRANSFORMS = _child(root.TRANSFORMS, 'mmrecprune.datasets.transforms')
METRICS = _child(root.METRICS, 'mmrecprune.evaluation')
WEIGHT_INITIALIZERS = _child(root.WEIGHT_INITIALIZERS, 'mmrecprune.models')

RUNNERS = _child(root.RUNNERS)
RUNNER_CONSTRUCTORS = _child(root.RUNNER_CONSTRUCTORS)
LOOPS = _child(root.LOOPS)
DATA_SAMPLERS = _child(root.DATA_SAMPLERS)
MODEL_WRAPPERS = _child(root.MODEL_WRAPPERS, 'mmrecprune.distributed')
OPTIMIZERS = _child(root.OPTIMIZERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(root.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(root.PARAM_SCHEDULERS)
EVALUATOR = _child(root.EVALUATOR)
TASK_UTILS = _child(root.TASK_UTILS)
VISUALIZERS = _child(root.VISUALIZERS)
VISBACKENDS = _child(root.VISBACKENDS)
LOG_PROCESSORS = _child(root.LOG_PROCESSORS)
INFERENCERS = _child(root.INFERENCERS)
FUNCTIONS = _child(root.FUNCTIONS)

# the plugin's own root: pruners (methods) built by the pruning hooks from `pruner=dict(...)`
PRUNERS = Registry('pruner', scope='mmrecprune', locations=['mmrecprune.methods'])


def build_criterion(cfg, registry=None, default_args=None):
    """The builder of ``CRITERIA``: ``CRITERIA.build(cfg)``.

    Args:
        cfg (dict | str | object): ``dict(type=NAME, **args)`` (``NAME`` registered here or in
            the engine's table, with or without the ``mmrecprune.`` scope), just the name, or an
            already built criterion (returned as is).
        registry (Registry): The registry to build from. Defaults to ``CRITERIA``.

    Raises:
        ValueError: On an unknown type (naming the registered ones) or an argument the
            criterion does not take.
    """
    registry = CRITERIA if registry is None else registry
    if callable(cfg) and not isinstance(cfg, (str, dict)):
        return cfg
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    _seed_criteria()  # criteria added to the engine's table since this module was imported
    kind = cfg.get('type')
    if isinstance(kind, str) and registry.get(kind) is None:
        raise ValueError(f'unknown importance {kind!r}; registered criteria: '
                         f'{sorted(CRITERIA.module_dict)} (a plugin adds its own with '
                         '@mmrecprune.registry.CRITERIA.register_module())')
    cfg.setdefault('_scope_', registry.scope)  # no scope fallback under default_scope='mmdet'
    try:
        return build_from_cfg(cfg, registry, default_args)
    except TypeError as err:  # an argument the criterion does not take
        raise ValueError(f'importance {kind}: {err}') from None


# what matters: criteria that score weights or channels (``importance=dict(type=...)``)
CRITERIA = Registry('criterion', scope='mmrecprune', build_func=build_criterion,
                    locations=['mmrecprune.sparsity.importance'])


def _seed_criteria():
    from mmrecprune.sparsity.importance import CRITERION_TYPES
    for name, cls in CRITERION_TYPES.items():
        if name not in CRITERIA.module_dict:
            CRITERIA.register_module(name=name, module=cls)


_seed_criteria()
