"""Every pruning hook drives one declared pruner family (``pruner_protocol``, a protocol class of
``mmrecprune.methods.base``): a config pairing it with another family's pruner is refused when
the hook is built, with one line naming both, and every attribute a hook reads from its pruner
is declared on that protocol."""
import ast
import inspect

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmrecprune.hooks as hooks
from mmrecprune.methods import (IterativeMagnitudePruner, L1GlobalPruner, L1UniformPruner,
                                OneShotMagnitudePruner, OnTheFlyPruner, PSAPPruner)
from mmrecprune.methods.base import (BasePruner, ChannelPruner, IterativePruner,
                                     RetrainingFreePruner, family_of)
from mmrecprune.registry import HOOKS, PRUNERS
from tests.conftest import repo_path, tiny_cls_cfg

# one shipped config per pruner, and the hook it ships with
CONFIGS = dict(
    imp='configs/imp/imp_r18-w16_7r-1e_fashionmnist.py',
    psap='configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py',
    l1_uniform='configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py',
    l1_global='configs/l1/l1-global_r18-w16_1xb128-4e_fashionmnist.py',
    oneshot='configs/onthefly/oneshot_r18-w16_1xb128-6e_fashionmnist.py',
    onthefly='configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py',
)
HOOK_OF = dict(imp='LotteryTicketHook', psap='StructuredPruningHook',
               l1_uniform='StructuredPruningHook', l1_global='StructuredPruningHook',
               oneshot='OnTheFlyPruningHook', onthefly='OnTheFlyPruningHook')


@pytest.fixture(autouse=True)
def mmrecprune_scope():
    """Hooks are built as in our configs (default scope mmrecprune), whatever scope an earlier
    test's runner left current."""
    with DefaultScope.overwrite_default_scope('mmrecprune'):
        yield


def hook_cfg(name):
    """The (only) pruning hook of a shipped config, as a plain dict."""
    cfg = Config.fromfile(repo_path(CONFIGS[name]))
    (hook, ) = [h for h in cfg.custom_hooks if 'Pruning' in h['type'] or 'Lottery' in h['type']]
    return hook.to_dict() if hasattr(hook, 'to_dict') else dict(hook)


def test_the_hooks_declare_their_protocols():
    assert hooks.LotteryTicketHook.pruner_protocol is IterativePruner
    assert hooks.StructuredPruningHook.pruner_protocol is ChannelPruner
    assert hooks.OnTheFlyPruningHook.pruner_protocol is RetrainingFreePruner
    assert hooks.PruningHook.pruner_protocol is BasePruner
    assert family_of(IterativeMagnitudePruner) is IterativePruner
    for cls in (PSAPPruner, L1UniformPruner, L1GlobalPruner):
        assert family_of(cls) is ChannelPruner
    for cls in (OneShotMagnitudePruner, OnTheFlyPruner):
        assert family_of(cls) is RetrainingFreePruner


def test_lottery_ticket_hook_refuses_psap_in_one_line():
    cfg = dict(hook_cfg('imp'), pruner=hook_cfg('psap')['pruner'])
    with pytest.raises(ValueError) as err:
        HOOKS.build(cfg)
    assert str(err.value) == (
        'LotteryTicketHook drives iterative unstructured pruners (IterativeMagnitudePruner); '
        'PSAPPruner is a structured pruner: use StructuredPruningHook')


@pytest.mark.parametrize('hook', sorted(CONFIGS))
@pytest.mark.parametrize('pruner', sorted(CONFIGS))
def test_every_wrong_pairing_of_the_shipped_configs_is_refused(hook, pruner):
    cfg = dict(hook_cfg(hook), pruner=hook_cfg(pruner)['pruner'])
    if HOOK_OF[hook] == HOOK_OF[pruner]:
        built = HOOKS.build(cfg)
        assert isinstance(built.pruner, built.pruner_protocol)
        return
    with pytest.raises(ValueError) as err:
        HOOKS.build(cfg)
    message = str(err.value)
    pruner_type = cfg['pruner']['type']
    assert '\n' not in message
    assert message.startswith(f'{HOOK_OF[hook]} drives ')
    assert f'; {pruner_type} is a' in message and message.endswith(f': use {HOOK_OF[pruner]}')


def test_refused_before_the_other_familys_arguments_are_checked():
    # IMP's arguments mean nothing to PSAPPruner: the family is named, not the argument
    cfg = dict(hook_cfg('psap'), pruner=dict(type='mmrecprune.IterativeMagnitudePruner',
                                             prune_ratio=0.2, rewind_to='pretrained'))
    with pytest.raises(ValueError, match=r'^StructuredPruningHook drives structured pruners '
                       r'\(L1GlobalPruner, L1UniformPruner, PSAPPruner\); '
                       r'IterativeMagnitudePruner is an iterative unstructured pruner: use '
                       r'LotteryTicketHook$'):
        HOOKS.build(cfg)


def test_a_pruner_class_given_as_type_is_checked_too():
    with pytest.raises(ValueError, match='OneShotMagnitudePruner is a retraining-free'):
        hooks.LotteryTicketHook(rounds=2, epochs_per_round=1,
                                pruner=dict(type=OneShotMagnitudePruner, sparsity=0.5))


def test_a_pruner_of_no_family_is_refused_by_every_hook():

    class FamilylessPruner(BasePruner):
        method = 'familyless'

    PRUNERS.register_module(module=FamilylessPruner, force=True)
    try:
        for name in ('imp', 'psap', 'oneshot'):
            with pytest.raises(ValueError) as err:
                HOOKS.build(dict(hook_cfg(name), pruner=dict(type='FamilylessPruner')))
            assert 'FamilylessPruner implements none of the pruner families' in str(err.value)
            assert '\n' not in str(err.value)
    finally:
        PRUNERS.module_dict.pop('FamilylessPruner')


def test_a_runner_refuses_the_pairing_when_it_builds_its_hooks(tmp_path):
    cfg = tiny_cls_cfg(tmp_path, config=CONFIGS['imp'], max_epochs=2)
    cfg.custom_hooks[0]['pruner'] = hook_cfg('psap')['pruner']
    with pytest.raises(ValueError, match='PSAPPruner is a structured pruner: use '
                       'StructuredPruningHook'):
        Runner.from_cfg(cfg)


def test_legacy_arguments_still_build_the_default_pruners():
    lottery = hooks.LotteryTicketHook(rounds=2, epochs_per_round=1, prune_ratio=0.3)
    assert type(lottery.pruner) is IterativeMagnitudePruner
    structured = hooks.StructuredPruningHook(method='l1_global', num_steps=2)
    assert type(structured.pruner) is L1GlobalPruner
    assert type(hooks.OnTheFlyPruningHook().pruner) is OnTheFlyPruner


def _declared(protocol):
    names = set(dir(protocol))
    for cls in protocol.__mro__:
        names |= set(vars(cls).get('__annotations__', {}))
    return names


def _pruner_reads(hook_cls):
    """Attribute names the hook's own module reads from its pruner: ``self.pruner.X`` and
    ``p.X`` where ``p = self.pruner`` (the hooks' one alias)."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(hook_cls)))
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id == 'p':
            reads.add(node.attr)
        elif (isinstance(owner, ast.Attribute) and owner.attr == 'pruner'
              and isinstance(owner.value, ast.Name) and owner.value.id == 'self'):
            reads.add(node.attr)
    return reads


@pytest.mark.parametrize('hook_cls', [hooks.PruningHook, hooks.LotteryTicketHook,
                                      hooks.StructuredPruningHook, hooks.OnTheFlyPruningHook])
def test_what_a_hook_reads_from_its_pruner_is_declared_on_its_protocol(hook_cls):
    reads = _pruner_reads(hook_cls)
    assert reads, hook_cls
    missing = sorted(reads - _declared(hook_cls.pruner_protocol))
    assert not missing, f'{hook_cls.__name__} reads {missing} not declared on ' \
                        f'{hook_cls.pruner_protocol.__name__}'
    source = inspect.getsource(inspect.getmodule(hook_cls))
    assert 'hasattr(self.pruner' not in source and 'hasattr(p,' not in source
    assert 'getattr(self.pruner' not in source and 'getattr(p,' not in source


@pytest.mark.parametrize('hook_cls', [hooks.LotteryTicketHook, hooks.StructuredPruningHook,
                                      hooks.OnTheFlyPruningHook])
def test_the_hooks_take_rank_syncs_one_ddp_path(hook_cls):
    # every step goes through synchronized_step (the on-the-fly hook's several recoveries of
    # one plan too, as its commit); no hook plans, broadcasts or checks by hand
    source = inspect.getsource(inspect.getmodule(hook_cls))
    assert 'synchronized_step(' in source
    for by_hand in ('synchronized_plan', 'check_step', 'broadcast_masks', 'check_ranks_agree',
                    'all_reduce', 'broadcast(', '.plan('):
        assert by_hand not in source, by_hand
