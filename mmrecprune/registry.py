"""Child registries of MMEngine's roots.

``locations`` lets a registry import the modules that fill it on first use, so both
``type='mmrecprune.X'`` from an mmdet / mmseg config and
``custom_imports=dict(imports=['mmrecprune'])`` resolve every module.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmrecprune',
                  locations=['mmrecprune.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmrecprune',
                 locations=['mmrecprune.hooks'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          scope='mmrecprune', locations=['mmrecprune.optim'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmrecprune',
                    locations=['mmrecprune.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS,
                      scope='mmrecprune', locations=['mmrecprune.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmrecprune',
                   locations=['mmrecprune.evaluation'])
