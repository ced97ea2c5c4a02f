"""Resume state is data: a checkpoint's pruner state, scheduler states and meta are checked
before they reach a live pruner, scheduler, optimizer or train loop, and a bad one is refused
with an error naming the entry and the fix, with nothing loaded.

The crafted files are real checkpoints (written by real pruners and real runs) with one entry
edited, saved with ``torch.save`` and read back through the project's loader, as a resumed run
reads them.
"""
import copy
import math

import pytest
import torch
from mmengine.runner import Runner

from mmrecprune.fileio import load_mmengine_checkpoint
from mmrecprune.fileio.resume_state import (ResumeStateError, check_resume_state,
                                            check_scheduler_state)
from mmrecprune.hooks import LotteryTicketHook
from mmrecprune.hooks.plain_checkpoint_hook import with_plain_checkpoints
from mmrecprune.methods import IterativeMagnitudePruner, OneShotMagnitudePruner
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import PrunerStateError
from tests.conftest import tiny_cls_cfg
from tests.methods.test_structured_pruners import X, classifier, pruner

pytestmark = pytest.mark.usefixtures('single_thread')


def _through_a_file(state, path):
    """``state`` written by ``torch.save`` and read back as a resumed run reads it."""
    torch.save(state, str(path))
    return load_mmengine_checkpoint(str(path))


def _edited(state, edit):
    state = copy.deepcopy(state)
    edit(state)
    return state


# ---- (a) pruner states ---------------------------------------------------------------------
@pytest.fixture(scope='module')
def psap_state():
    p = pruner('psap', num_steps=3, protect_factor=1.0)
    p.step()
    return p.state_dict()


def _first(state, key):
    return next(iter(state[key]))


PSAP_ATTACKS = {
    'step NaN': (lambda s: s.__setitem__('step', float('nan')), "'step' must be an int"),
    'step negative': (lambda s: s.__setitem__('step', -5), r"'step' must be an int \[0, 3\]"),
    'step past the schedule': (lambda s: s.__setitem__('step', 2 ** 100), "'step' must be"),
    'mask of one entry': (lambda s: s['masks'].__setitem__(
        _first(s, 'masks'), torch.zeros(1, dtype=torch.bool)), r'must have shape \(8,\)'),
    'float mask with NaN': (lambda s: s['masks'].__setitem__(
        _first(s, 'masks'), torch.full((8, ), math.nan)), 'must be a tensor of torch.bool'),
    'protected of the wrong shape': (lambda s: s['protected'].__setitem__(
        _first(s, 'protected'), torch.zeros(3, dtype=torch.bool)), r"protected\[.*shape \(8,\)"),
    'present negative': (lambda s: s.__setitem__('present', {_first(s, 'masks'): torch.tensor(
        [-1, 0])}), r'channel indices in \[0, 8\)'),
    'present out of range': (lambda s: s.__setitem__('present', {_first(s, 'masks'): torch.tensor(
        [0, 10 ** 6])}), r'channel indices in \[0, 8\)'),
    'present unsorted': (lambda s: s.__setitem__('present', {_first(s, 'masks'): torch.tensor(
        [3, 1])}), 'sorted channel indices without repeats'),
    'present as floats': (lambda s: s.__setitem__('present', {_first(s, 'masks'): torch.tensor(
        [1.7, 0.2])}), 'must be a tensor of torch.int64'),
    'history of ints': (lambda s: s.__setitem__('history', [1, 2]), r"'history\[0\]' must be a "
                        'dict'),
    'gradient EMA with NaN': (lambda s: s['grad_stats']['ema'].fill_(math.nan), 'NaN'),
    'backup of the wrong shape': (lambda s: s['backups'].__setitem__(
        next(iter(s['backups'])), torch.zeros(1)), r"backups\[.*must have shape"),
    'unknown key': (lambda s: s.__setitem__('__class__', 'x'), 'unknown keys'),
    # compared with the run's values only once their types match: a tensor is refused
    'num_steps as a tensor': (lambda s: s.__setitem__('num_steps', torch.tensor([3, 3])),
                              "'num_steps' was saved as a torch.int64 tensor"),
    'num_steps as a one-element tensor': (lambda s: s.__setitem__('num_steps', torch.tensor(3)),
                                          "'num_steps' was saved as a torch.int64 tensor"),
    'group widths as tensors': (lambda s: s['groups'].update(
        {k: torch.tensor([8, 8]) for k in s['groups']}), "'groups' was saved as dict"),
    # one large value shared at every position: the message shows a bounded part of it
    'method shared a thousand times': (lambda s: s.__setitem__('method', ['A' * 2 ** 20] * 1000),
                                       r"'method' was saved as list \['AAA"),
    'history shared a thousand times': (lambda s: s.__setitem__(
        'history', [['A' * 2 ** 20] * 1000]), r"'history\[0\]' must be a dict"),
}


@pytest.mark.parametrize('attack', PSAP_ATTACKS)
def test_bad_structured_state_is_refused_before_anything_loads(attack, psap_state, tmp_path):
    edit, message = PSAP_ATTACKS[attack]
    state = _through_a_file(_edited(psap_state, edit), tmp_path / 'state.pth')
    twin = pruner('psap', classifier(seed=1), num_steps=3, protect_factor=1.0)
    weights = {n: t.clone() for n, t in twin.model.state_dict().items()}
    with pytest.raises(PrunerStateError, match=message) as error:
        twin.load_state_dict(state)
    assert 'resume from a checkpoint written by a run of this config' in str(error.value)
    # nothing changed: the twin still resumes the genuine state
    assert twin.step_count == 0 and all(m.all() for m in twin.masks.values())
    assert not twin.soft.present and not twin.history
    for n, t in twin.model.state_dict().items():
        assert torch.equal(t, weights[n]), n
    twin.load_state_dict(_through_a_file(psap_state, tmp_path / 'good.pth'))
    assert twin.step_count == 1


def test_state_that_is_not_a_dict_is_refused(tmp_path):
    state = _through_a_file([1, 2], tmp_path / 'list.pth')
    for method in ('psap', 'l1_global'):
        with pytest.raises(PrunerStateError, match="'state' must be a dict"):
            pruner(method, num_steps=3).load_state_dict(state)


def test_slimmed_state_resumes_and_a_bad_present_leaves_the_model_dense(tmp_path):
    p = pruner('l1_global', num_steps=2, slim_during_training=True)
    p.step()
    p.slim()
    good = _through_a_file(p.state_dict(), tmp_path / 'slim.pth')
    name = next(iter(good['present']))
    bad = _edited(good, lambda s: s['present'].__setitem__(name, s['present'][name][:0]))
    twin = pruner('l1_global', classifier(seed=1), num_steps=2, slim_during_training=True)
    dense = {n: tuple(t.shape) for n, t in twin.model.state_dict().items()}
    with pytest.raises(PrunerStateError, match='non-empty vector of channel indices'):
        twin.load_state_dict(bad)
    assert {n: tuple(t.shape) for n, t in twin.model.state_dict().items()} == dense
    twin.load_state_dict(good)
    twin.model.load_state_dict(p.model.state_dict())
    torch.testing.assert_close(twin.model.eval()(X), p.model.eval()(X), rtol=0, atol=0)


def _iterative(seed=0):
    p = IterativeMagnitudePruner(prune_ratio=0.5)
    p.attach(classifier(seed=seed))
    return p


IMP_ATTACKS = {
    'negative round': (lambda s: s.__setitem__('step', -1), "'step' must be an int >= 0"),
    'both counters': (lambda s: s.__setitem__('round', 1), 'must be given once'),
    'mask bits of the wrong length': (lambda s: s['masks'].__setitem__(
        next(iter(s['masks'])), torch.zeros(1, dtype=torch.uint8)), r"masks\[.*shape"),
    'mask of another dtype': (lambda s: s['masks'].__setitem__(
        next(iter(s['masks'])), s['masks'][next(iter(s['masks']))].bool()), 'torch.uint8'),
    'rewind weights of the wrong shape': (lambda s: s['rewind_state'].__setitem__(
        'head.weight', torch.zeros(3)), r"rewind_state\['head.weight'\]. must have shape"),
    'rewind weights with NaN': (lambda s: s['rewind_state']['head.bias'].fill_(math.nan),
                                'NaN'),
}


@pytest.mark.parametrize('attack', IMP_ATTACKS)
def test_bad_iterative_state_is_refused(attack, tmp_path):
    p = _iterative()
    p.snapshot()
    p.step()
    edit, message = IMP_ATTACKS[attack]
    state = _through_a_file(_edited(p.state_dict(), edit), tmp_path / 'imp.pth')
    twin = _iterative(seed=1)
    with pytest.raises(PrunerStateError, match=message):
        twin.load_state_dict(state)
    assert twin.step_count == 0 and twin.rewind_state is None
    assert all(m.all() for m in twin.masks.values())
    twin.load_state_dict(_through_a_file(p.state_dict(), tmp_path / 'good.pth'))
    assert twin.step_count == 1 and twin.sparsity == p.sparsity


def test_bad_one_shot_and_post_training_states_are_refused(tmp_path):
    p = OneShotMagnitudePruner(sparsity=0.5, recovery='layer_mean')
    p.attach(classifier())
    p.step()
    name = next(iter(p.fill_values))
    twin = OneShotMagnitudePruner(sparsity=0.5, recovery='layer_mean')
    twin.attach(classifier(seed=1))
    for edit, message in (
            (lambda s: s.__setitem__('recovery', 'builtins.exec'), "'recovery' must be one of"),
            (lambda s: s['fill_values'].__setitem__(name, torch.zeros(5)), 'does not broadcast'),
            (lambda s: s['fill_values'].__setitem__(name, torch.tensor(math.inf)), 'infinite'),
            (lambda s: s['fill_values'].__setitem__('head.weight', torch.tensor(0.)),
             'unknown keys')):
        with pytest.raises(PrunerStateError, match=message):
            twin.load_state_dict(_through_a_file(_edited(p.state_dict(), edit),
                                                 tmp_path / 'one_shot.pth'))
        assert not twin.pruned and twin.step_count == 0
    twin.load_state_dict(_through_a_file(p.state_dict(), tmp_path / 'good.pth'))
    assert twin.pruned and all(torch.equal(twin.masks[n], m) for n, m in p.masks.items())

    post = PRUNERS.build(dict(type='PostTrainingPruner', reconstruction=None))
    post.attach(classifier(), X)
    post.commit(post.plan())
    group = next(iter(post.masks))
    fresh = PRUNERS.build(dict(type='PostTrainingPruner', reconstruction=None))
    fresh.attach(classifier(seed=1), X)
    bad = _edited(post.state_dict(), lambda s: s['masks'].__setitem__(
        group, s['masks'][group].float()))
    with pytest.raises(PrunerStateError, match='must be a tensor of torch.bool'):
        fresh.load_state_dict(_through_a_file(bad, tmp_path / 'post.pth'))
    assert fresh.step_count == 0 and all(m.all() for m in fresh.masks.values())


# ---- (b) what MMEngine's resume feeds into live objects ----------------------------------------
def test_scheduler_states_may_not_name_scheduler_members():
    good = dict(milestones={1: 1}, gamma=0.1, param_name='lr', begin=0, end=1, by_epoch=True,
                base_values=[0.1], last_step=0, _global_step=1, verbose=False,
                _last_value=[0.1])
    check_scheduler_state(good)
    for key in ('step', 'state_dict', 'load_state_dict', 'get_last_value', '_get_value',
                'optimizer', '__class__', '__dict__'):
        with pytest.raises(ResumeStateError, match=f"'{key}'.*names a method or attribute"):
            check_scheduler_state(dict(good, **{key: 1}))
    with pytest.raises(ResumeStateError, match='not plain data'):
        check_scheduler_state(dict(good, gamma=object()))
    for key, value, message in (('last_step', 'abc', 'must be an int >= -1'),
                                ('end', 1.5, 'must be an int >= 0'),
                                ('by_epoch', 'yes', 'must be True or False'),
                                ('param_name', 7, 'must be a str'),
                                ('base_values', [math.inf], 'must be a list of finite numbers'),
                                ('gamma', math.nan, 'holds NaN')):
        with pytest.raises(ResumeStateError, match=rf"\['{key}'\] {message}"):
            check_scheduler_state(dict(good, **{key: value}))
    for meta, message in ((dict(epoch=1, iter=-1000), r"meta\['iter'\] must be an int >= 0"),
                          (dict(epoch='abc', iter=2), r"meta\['epoch'\] must be an int"),
                          (dict(seed=2 ** 40), r"meta\['seed'\]"),
                          # one large value shared a thousand times: a bounded message
                          (dict(epoch=['A' * 2 ** 20] * 1000),
                           r"meta\['epoch'\] must be an int >= 0, got \['AAA.{,80}\.\.\.; ")):
        with pytest.raises(ResumeStateError, match=message):
            check_resume_state(dict(meta=meta, param_schedulers=[good]), 'ckpt.pth')
    with pytest.raises(ResumeStateError, match='dict of such lists'):
        check_resume_state(dict(param_schedulers='step'))
    check_resume_state(dict(meta=dict(epoch=1, iter=2, seed=0, cfg='x = 1'),
                            param_schedulers=dict(generator=[good], discriminator=[good])))


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    """A real run of one epoch with a MultiStepLR schedule, checkpointed as every run is."""
    work_dir = tmp_path_factory.mktemp('trained')
    cfg = _cfg(work_dir, max_epochs=1)
    Runner.from_cfg(cfg).train()
    return str(work_dir / 'epoch_1.pth')


def _cfg(work_dir, max_epochs):
    cfg = tiny_cls_cfg(work_dir, max_epochs=max_epochs, train_size=32)
    cfg.param_scheduler = [dict(type='MultiStepLR', milestones=[1], by_epoch=True)]
    with_plain_checkpoints(cfg)
    return cfg


RUNNER_ATTACKS = {
    'scheduler step shadowed': lambda c: c['param_schedulers'][0].update(step=1),
    'scheduler optimizer replaced': lambda c: c['param_schedulers'][0].update(optimizer=[]),
    'negative iter': lambda c: c['meta'].update(iter=-1000, epoch=-3),
    'epoch as a string': lambda c: c['meta'].update(epoch='abc'),
}


@pytest.mark.parametrize('attack', RUNNER_ATTACKS)
def test_the_loader_refuses_bad_resume_state(attack, trained_run, tmp_path):
    path = tmp_path / 'edited.pth'
    torch.save(_edited(load_mmengine_checkpoint(trained_run), RUNNER_ATTACKS[attack]), path)
    with pytest.raises(ResumeStateError, match='resume entry'):
        load_mmengine_checkpoint(str(path))
    assert load_mmengine_checkpoint(trained_run)['meta']['epoch'] == 1


def test_a_resumed_run_refuses_a_shadowed_scheduler_step_before_training(trained_run,
                                                                         tmp_path):
    path = tmp_path / 'edited.pth'
    torch.save(_edited(load_mmengine_checkpoint(trained_run),
                       RUNNER_ATTACKS['scheduler step shadowed']), path)
    cfg = _cfg(tmp_path / 'resumed', max_epochs=2)
    cfg.resume, cfg.load_from = True, str(path)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ResumeStateError, match=r"param_schedulers\[0\]\['step'\]"):
        runner.train()
    assert runner.iter == 0 and not (tmp_path / 'resumed' / 'epoch_2.pth').exists()
    # the genuine checkpoint still resumes and trains on
    cfg = _cfg(tmp_path / 'good', max_epochs=2)
    cfg.resume, cfg.load_from = True, trained_run
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 2 and callable(runner.param_schedulers[0].step)


def test_a_config_to_execute_is_dropped_unread(trained_run, tmp_path):
    """``Runner.resume`` executes ``meta['config']`` as a Python config file. The loader drops
    it (mmcv 1.x model-zoo checkpoints carry one, and must still load), so a resumed run never
    sees it: the code in it does not run and the run trains on."""
    marker = tmp_path / 'ran'
    path = tmp_path / 'edited.pth'
    code = f'import os\nopen({str(marker)!r}, "w").write("ran")\ngpu_ids = [0, 1, 2]\n'
    torch.save(_edited(load_mmengine_checkpoint(trained_run),
                       lambda c: c['meta'].update(config=code)), path)
    assert 'config' not in load_mmengine_checkpoint(str(path))['meta']
    cfg = _cfg(tmp_path / 'resumed', max_epochs=2)
    cfg.resume, cfg.load_from = True, str(path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 2 and not marker.exists()


@pytest.fixture(scope='module')
def lottery_run(tmp_path_factory, trained_run):
    from tests.hooks.test_lottery_ticket_hook import lottery_cfg
    work_dir = tmp_path_factory.mktemp('lottery')
    cfg = lottery_cfg(work_dir, trained_run, rounds=2)
    cfg.param_scheduler = [dict(type='MultiStepLR', milestones=[1], by_epoch=True)]
    Runner.from_cfg(cfg).train()
    return work_dir


LOTTERY_ATTACKS = {
    'initial scheduler step shadowed': (
        lambda s: s['initial_schedulers'][0].update(step=1),
        r"initial_schedulers\[0\]\['step'\] names a method"),
    'initial lr NaN': (lambda s: s['initial_lrs'].__setitem__(0, math.nan),
                       r"initial_lrs\[0\] must be a finite number"),
    'initial lrs for another optimizer': (lambda s: s['initial_lrs'].append(0.1),
                                          'has 2 entries, this run has 1'),
    'pruner step negative': (lambda s: s.__setitem__('step', -1), "'step' must be an int"),
}


@pytest.mark.parametrize('attack', LOTTERY_ATTACKS)
def test_lottery_resume_refuses_its_bad_state_before_training(attack, lottery_run, tmp_path):
    from tests.hooks.test_lottery_ticket_hook import lottery_cfg
    edit, message = LOTTERY_ATTACKS[attack]
    checkpoint = load_mmengine_checkpoint(str(lottery_run / 'epoch_1.pth'))
    assert checkpoint['lottery_ticket']['initial_schedulers']  # what the attack edits
    edit(checkpoint['lottery_ticket'])
    torch.save(checkpoint, tmp_path / 'edited.pth')
    cfg = lottery_cfg(tmp_path / 'resumed', str(lottery_run / 'epoch_1.pth'), rounds=2)
    cfg.param_scheduler = [dict(type='MultiStepLR', milestones=[1], by_epoch=True)]
    cfg.resume, cfg.load_from = True, str(tmp_path / 'edited.pth')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=message):
        runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, LotteryTicketHook))
    assert hook.pruner.step_count == 0 and not hook.resumed and runner.iter == 0
    assert all(isinstance(s, dict) for s in hook._initial_schedulers)
