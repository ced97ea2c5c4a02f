"""Slimming during training on bare modules: the engine slices parameters (keeping the objects)
and optimizer state; a pruner with ``slim_during_training=True`` removes channels as soon as
they cannot come back, picks the channels a soft-mask run picks, and round-trips its state."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrecprune.optim import PruningOptimWrapper
from mmrecprune.sparsity import (expand_channels, find_channel_groups, inference_forward,
                                 slim_model)
from tests.methods.test_structured_pruners import X, classifier, pruner

pytestmark = pytest.mark.usefixtures('single_thread')


def _batches(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4, ), generator=g))
            for _ in range(steps)]


def _train(model, wrapper, batches):
    for x, y in batches:
        with wrapper.optim_context(model):
            loss = F.cross_entropy(model(x), y)
        wrapper.update_params(loss)


def _wrapper(model, optimizer='SGD'):
    if optimizer == 'SGD':
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    return PruningOptimWrapper(optimizer=opt)


def _prune_step(p, wrapper):
    """What StructuredPruningHook does at a step: commit, clear changed state, slim."""
    plan = p.plan()
    changed = p.commit(plan)
    wrapper.reset_state(p.optimizer_slices(changed))
    return p.slim([wrapper.optimizer])


@pytest.mark.parametrize('optimizer', ['SGD', 'AdamW'])
def test_slim_model_keeps_parameters_and_slices_optimizer_state(optimizer):
    model = classifier()
    wrapper = _wrapper(model, optimizer)
    _train(model, wrapper, _batches(2))
    groups = find_channel_groups(model, X)
    g = groups[1]
    keep = torch.ones(g.num_channels, dtype=torch.bool)
    keep[::2] = False
    conv = dict(model.named_modules())[g.name]
    param, state = conv.weight, {k: v.clone() for k, v in
                                 wrapper.optimizer.state[conv.weight].items()}
    ids = [id(p) for p in model.parameters()]
    slim_model(model, groups, {g.name: keep}, optimizers=[wrapper.optimizer])
    assert [id(p) for p in model.parameters()] == ids and conv.weight is param
    assert conv.weight.shape[0] == int(keep.sum()) == conv.out_channels
    for key, value in wrapper.optimizer.state[conv.weight].items():
        if value.ndim:
            assert torch.equal(value, state[key][keep]), key
        else:
            assert torch.equal(value, state[key]), key  # Adam's step
    _train(model, wrapper, _batches(2, seed=1))  # the optimizer steps on the new shapes


def test_expand_channels_is_the_inverse_of_slimming():
    p = pruner('l1_global', slim_during_training=True)
    wrapper = _wrapper(p.model)
    wrapper.attach(p)
    _prune_step(p, wrapper)
    assert p.slimmed
    dense = p.dense_copy()
    assert dense is not p.model
    for name, sizes in p.soft.dense_sizes.items():
        module = dict(dense.named_modules())[name]
        assert getattr(module, 'out_channels', getattr(module, 'num_features', None)) in (
            sizes['out'], None) or module.out_features == sizes['out']
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(inference_forward(dense, x), inference_forward(p.model, x))
    again = copy.deepcopy(dense)
    slim_model(again, p.groups, {n: p.soft.present_mask(g) for g in p.groups
                                 for n in [g.name] if n in p.soft.present})
    for a, b in zip(again.state_dict().values(), p.model.state_dict().values()):
        assert torch.equal(a, b)
    expand_channels(again, p.groups, p.soft.present)
    for a, b in zip(again.state_dict().values(), dense.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('method, kwargs', [
    ('l1_uniform', {}), ('l1_global', {}),
    ('l1_uniform', dict(importance=dict(type='Random', seed=3))),
    ('l1_global', dict(importance=dict(type='Taylor'))),
    ('psap', dict(protective=False))])
def test_slim_run_keeps_the_channels_of_the_soft_mask_run(method, kwargs):
    """Same data, same seeds: the slim run chooses the soft run's channels at every step. (The
    two compute the same function, up to float rounding, which training on random labels
    amplifies, so outputs are compared right after the first cut.)"""
    runs, x = {}, torch.randn(2, 3, 32, 32)
    for slim in (False, True):
        p = pruner(method, classifier(), num_steps=3, slim_during_training=slim, **kwargs)
        wrapper = _wrapper(p.model)
        wrapper.attach(p)
        params, first = [], None
        for step in range(3):
            _train(p.model, wrapper, _batches(3, seed=step))
            removed = _prune_step(p, wrapper)
            assert bool(removed) == slim
            first = inference_forward(p.model, x) if first is None else first
            params.append(sum(t.numel() for t in p.model.parameters()))
        _train(p.model, wrapper, _batches(2, seed=9))
        runs[slim] = p, params, first
    (soft, soft_params, soft_out), (slim, slim_params, slim_out) = runs[False], runs[True]
    assert len(set(soft_params)) == 1 and slim_params[0] > slim_params[1] > slim_params[2]
    torch.testing.assert_close(slim_out, soft_out, rtol=1e-4, atol=1e-4)
    keys = ('step', 'cost', 'target', 'restored')  # PSAP's alpha reads float weight statistics
    assert [[h[k] for k in keys] for h in soft.history] == \
        [[h[k] for k in keys] for h in slim.history]
    for name in soft.masks:
        assert torch.equal(soft.masks[name], slim.masks[name]), name
    # the exported slim models have the same structure
    assert soft.slim_copy()[1] == slim.slim_copy()[1]


def test_protective_pruner_slims_only_after_its_last_step():
    p = pruner('psap', num_steps=3, protect_factor=1.0, slim_during_training=True)
    wrapper = _wrapper(p.model)
    wrapper.attach(p)
    dense_params = sum(t.numel() for t in p.model.parameters())
    for step in range(3):
        _train(p.model, wrapper, _batches(3, seed=step))
        assert p.can_slim == (step == 3)
        removed = _prune_step(p, wrapper)
        assert bool(removed) == (step == 2), step
    assert sum(t.numel() for t in p.model.parameters()) < dense_params
    assert not p.monitor.active
    slim, structure = p.slim_copy()
    assert structure == p.soft.structure()


def test_slimmed_state_round_trips_and_continues_identically():
    p = pruner('l1_global', num_steps=3, slim_during_training=True)
    wrapper = _wrapper(p.model)
    wrapper.attach(p)
    _train(p.model, wrapper, _batches(2))
    _prune_step(p, wrapper)
    _train(p.model, wrapper, _batches(2, seed=1))
    buffer = io.BytesIO()
    torch.save(dict(state=p.state_dict(), weights=p.model.state_dict(),
                    optimizer=wrapper.state_dict()), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    twin = pruner('l1_global', classifier(seed=1), num_steps=3, slim_during_training=True)
    twin_wrapper = _wrapper(twin.model)  # built on the dense model, as a runner builds it
    twin.load_state_dict(saved['state'])  # slims the model to the saved channels
    twin.model.load_state_dict(saved['weights'])
    twin_wrapper.load_state_dict(saved['optimizer'])
    twin_wrapper.attach(twin)
    for model, w, pr in ((p.model, wrapper, p), (twin.model, twin_wrapper, twin)):
        _train(model, w, _batches(2, seed=2))
        _prune_step(pr, w)
        _train(model, w, _batches(2, seed=3))
    for n in p.masks:
        assert torch.equal(p.masks[n], twin.masks[n])
    for (n, a), b in zip(p.model.state_dict().items(), twin.model.state_dict().values()):
        assert torch.equal(a, b), n


def test_slim_during_training_must_be_a_bool():
    with pytest.raises(ValueError, match='slim_during_training must be a bool'):
        pruner('l1_uniform', slim_during_training='yes')


def test_a_slimmed_away_channel_cannot_be_restored():
    p = pruner('l1_uniform', num_steps=2, slim_during_training=True)
    wrapper = _wrapper(p.model)
    wrapper.attach(p)
    _prune_step(p, wrapper)
    name = next(n for n in p.soft.present)
    masks = {n: m.clone() for n, m in p.masks.items()}
    masks[name][:] = True
    with pytest.raises(RuntimeError, match='cannot come back'):
        p.soft.update(masks)


def test_param_groups_survive(optimizer='SGD'):
    """Weight-decay groups (by parameter object) and their learning rates stay as they are."""
    p = pruner('l1_uniform', num_steps=1, slim_during_training=True)
    decay = [t for n, t in p.model.named_parameters() if 'bn' not in n]
    no_decay = [t for n, t in p.model.named_parameters() if 'bn' in n]
    opt = torch.optim.SGD([dict(params=decay, weight_decay=1e-2),
                           dict(params=no_decay, weight_decay=0.0)], lr=0.1, momentum=0.9)
    wrapper = PruningOptimWrapper(optimizer=opt)
    wrapper.attach(p)
    _train(p.model, wrapper, _batches(1))
    _prune_step(p, wrapper)
    assert all(a is b for a, b in zip(opt.param_groups[0]['params'], decay))
    assert all(a is b for a, b in zip(opt.param_groups[1]['params'], no_decay))
    _train(p.model, wrapper, _batches(1))
    assert isinstance(opt.param_groups[0]['params'][0], nn.Parameter)
