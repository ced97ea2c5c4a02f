"""Child registries of MMEngine's roots, in the scope ``mmrecprune``.

``locations`` lets a registry import the modules that fill it on first use, so both
``type='mmrecprune.X'`` from an mmdet / mmseg config and
``custom_imports=dict(imports=['mmrecprune'])`` resolve every module. Roots the plugin adds
nothing to still get a child, so a runner with ``default_scope='mmrecprune'`` finds MMEngine's
loops, samplers, visualizers, ... without scope-fallback warnings.
"""
from mmengine import registry as root
from mmengine.registry import Registry


def _child(parent, location=None):
    return Registry(parent.name, parent=parent, scope='mmrecprune',
                    locations=[location] if location else [])


MODELS = _child(root.MODELS, 'mmrecprune.models')
HOOKS = _child(root.HOOKS, 'mmrecprune.hooks')
OPTIM_WRAPPERS = _child(root.OPTIM_WRAPPERS, 'mmrecprune.optim')
DATASETS = _child(root.DATASETS, 'mmrecprune.datasets')
TRANSFORMS = _child(root.TRANSFORMS, 'mmrecprune.datasets')
METRICS = _child(root.METRICS, 'mmrecprune.evaluation')
WEIGHT_INITIALIZERS = _child(root.WEIGHT_INITIALIZERS, 'mmrecprune.models')

RUNNERS = _child(root.RUNNERS)
RUNNER_CONSTRUCTORS = _child(root.RUNNER_CONSTRUCTORS)
LOOPS = _child(root.LOOPS)
DATA_SAMPLERS = _child(root.DATA_SAMPLERS)
MODEL_WRAPPERS = _child(root.MODEL_WRAPPERS, 'mmrecprune.utils')
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
