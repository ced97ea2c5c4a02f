"""PSAP and the L1 baselines (``mmrecprune.methods``) on bare modules, built from configs as the
hooks build them: schedule, costs, soft masks, protection, importance, state."""
import copy
import io
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from torch import nn

from mmrecprune.methods import L1GlobalPruner, L1UniformPruner, PSAPPruner
from mmrecprune.optim import AmpPruningOptimWrapper, PruningOptimWrapper
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import (ChannelCostModel, apply_channel_masks, bisect,
                                 count_flops_params, inference_forward)

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
METHODS = ('psap', 'l1_uniform', 'l1_global')
TYPES = dict(psap='PSAPPruner', l1_uniform='L1UniformPruner', l1_global='L1GlobalPruner')


pytestmark = pytest.mark.usefixtures('single_thread')


class Classifier(nn.Module):
    """backbone + pooled linear head, keys ``backbone.*`` / ``head.*`` like ImageClassifier."""

    def __init__(self, depth=18, width=8):
        super().__init__()
        self.backbone = ResNet(depth=depth, base_channels=width, out_indices=(3, ))
        self.head = nn.Linear(width * 8 * (4 if depth >= 50 else 1), 10)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def classifier(depth=18, seed=0):
    torch.manual_seed(seed)
    return Classifier(depth)


def pruner(method='psap', model=None, target=None, num_steps=3, **kwargs):
    model = classifier() if model is None else model
    p = PRUNERS.build(dict(type=TYPES[method], target=target or dict(flops=0.5),
                           num_steps=num_steps, **kwargs))
    p.attach(model, X)
    return p


@pytest.mark.parametrize('depth, prune_residual', [(18, False), (18, True), (50, False),
                                                    (50, True)])
def test_cost_model_equals_count_flops_params_dense_and_slim(depth, prune_residual):
    p = pruner('l1_global', classifier(depth), prune_residual=prune_residual)
    model = p.model
    assert (p.cost_model.dense('flops'), p.cost_model.dense('params')) == \
        count_flops_params(model.backbone, tuple(X.shape))
    p.step()
    slim, structure = p.slim_copy()
    assert count_flops_params(slim.backbone, tuple(X.shape)) == \
        (p.cost(metric='flops'), p.cost(metric='params'))
    assert p.cost(metric='channels') == sum(k for k, _ in p.kept_widths().values())
    torch.testing.assert_close(inference_forward(slim, X), inference_forward(model, X))
    # with residual pruning the head's input is in a group, so slimming adjusts it too
    assert any(n == 'head' for g in p.groups for n, _ in g.members) == prune_residual
    assert all(k.startswith(('backbone.', 'head')) for k in structure)


@pytest.mark.parametrize('metric', ['flops', 'params', 'channels'])
@pytest.mark.parametrize('method', METHODS)
def test_every_step_meets_its_share_of_the_target(method, metric):
    p = pruner(method, target={metric: 0.5}, num_steps=3)
    costs = [p.cost()]
    for k in (1, 2, 3):
        plan = p.step()
        assert plan.cost == p.cost() <= p.target_cost(k)
        # close to the step's target, not far below it (one group's granularity)
        assert plan.cost > p.target_cost(k) - 0.06 * p.dense_cost
        costs.append(plan.cost)
    assert costs == sorted(costs, reverse=True)
    assert p.step_count == 3
    with pytest.raises(RuntimeError, match='all 3 pruning steps are done'):
        p.step()


@pytest.mark.parametrize('method', METHODS)
def test_soft_pruned_channels_are_zero_and_pruned_ones_stay_pruned(method):
    p = pruner(method, num_steps=2, round_to=2)
    p.step()
    first = {n: m.clone() for n, m in p.masks.items()}
    p.step()
    modules = dict(p.model.named_modules())
    for g in p.groups:
        assert not (p.masks[g.name] & ~first[g.name]).any()  # nothing came back
        conv, bn = modules[g.name], modules[g.name.replace('conv', 'bn')]
        pruned = ~p.masks[g.name]
        assert not conv.weight[pruned].any() and not bn.weight[pruned].any()
        assert not bn.bias[pruned].any()
        kept = int(p.masks[g.name].sum())
        assert kept % 2 == 0 or kept == g.num_channels  # round_to


@pytest.mark.parametrize('method', ('psap', 'l1_uniform'))
def test_rounding_slack_is_given_back_without_breaking_the_target(method):
    # ResNet-18 at width 16: its 8 groups come in 4 widths, so at round_to=4 whole stages jump
    # together and the bisection alone lands well below the target
    torch.manual_seed(0)
    p = pruner(method, Classifier(18, width=16), num_steps=1, round_to=4)
    target = p.target_cost(1)
    cost = partial(p.cost_model.cost, metric='flops')
    bisected = bisect(p.uniform_widths, cost, target, 0.0, 1.0)[1] \
        if method == 'l1_uniform' else None
    p.step()
    widths = p.widths()
    assert cost(widths) <= target
    assert all(int(w) % 4 == 0 or int(w) == g.num_channels for w, g in zip(widths, p.groups))
    if bisected is not None:
        assert cost(bisected) < cost(widths)  # something was given back
        assert (widths >= bisected).all() and (widths - bisected <= 4).all()
        assert (target - cost(widths)) / target < 0.5 * (target - cost(bisected)) / target


def test_adaptive_ratios_follow_layer_sparsity():
    model = classifier()
    sparse = model.backbone.layer3[0].conv1
    with torch.no_grad():  # many near-zero weights in one layer
        sparse.weight.view(-1)[::2] *= 1e-3
    p = pruner('psap', model, num_steps=1)
    s = p.layer_sparsity()
    names = [g.name for g in p.groups]
    i = names.index('backbone.layer3.0.conv1')
    assert s[i] > 0.4 and s[i] == s.max() and (s[:i] < 0.15).all()
    a = p.layer_weights()
    assert a[i] == a.max() and a.min() >= p.ratio_floor
    plan = p.step()
    ratio = {g.name: 1 - int(plan.masks[g.name].sum()) / g.num_channels for g in p.groups}
    assert ratio['backbone.layer3.0.conv1'] > ratio['backbone.layer3.1.conv1']

    flat = pruner('psap', copy.deepcopy(model), num_steps=1, adaptive=False)
    assert torch.equal(flat.layer_weights(), torch.ones(len(flat.groups), dtype=torch.float64))
    plan = flat.step()
    ratios = [1 - int(plan.masks[g.name].sum()) / g.num_channels for g in flat.groups]
    assert max(ratios) - min(ratios) <= 1 / 8 + 1e-6  # uniform up to one channel of 8


def _train(model, wrapper, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (4, ), generator=g)
        with wrapper.optim_context(model):
            loss = F.cross_entropy(model(x), y)
        wrapper.update_params(loss)


def _wrapper(model, cls=PruningOptimWrapper, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    return cls(optimizer=optimizer, **kwargs)


def test_wrapper_keeps_soft_masks_and_records_activation_gradients():
    p = pruner('psap', num_steps=3)
    model = p.model
    wrapper = _wrapper(model, accumulative_counts=2)
    wrapper.attach(p)
    wrapper.initialize_count_status(model, 0, 8)
    _train(model, wrapper, 2)
    assert not p.monitor.active and int(p.monitor.count.sum()) == 0  # nothing pruned yet
    p.step()
    assert p.monitor.active
    before = {n: t.clone() for n, t in model.state_dict().items()}
    _train(model, wrapper, 6)
    # 6 iterations, 2 per optimizer step: 3 folds per channel
    assert torch.equal(p.monitor.count, torch.full_like(p.monitor.count, 3))
    ema = p.monitor.ema
    assert (ema > 0).all()  # pruned channels have a signal too: their consumers read them
    modules = dict(model.named_modules())
    moved = 0
    for g in p.groups:
        pruned = ~p.masks[g.name]
        conv = modules[g.name]
        assert not conv.weight[pruned].any()
        moved += int((conv.weight != before[g.name + '.weight']).sum())
    assert moved > 0
    # the cached re-zeroing equals the engine's apply_channel_masks
    state = {n: t.clone() for n, t in model.state_dict().items()}
    apply_channel_masks(model, p.groups, p.masks)
    for n, t in model.state_dict().items():
        assert torch.equal(t, state[n]), n


def test_protective_restoration_restores_backup_and_exempts():
    p = pruner('psap', num_steps=3, protect_factor=2.0)
    modules = dict(p.model.named_modules())
    dense = {n: t.clone() for n, t in p.model.state_dict().items()}
    p.step()
    g = p.groups[4]
    gi = 4
    pruned = (~p.masks[g.name]).nonzero().flatten()
    chosen = int(pruned[0])
    ema = p.monitor.view(p.monitor.ema, gi)
    ema.fill_(1.0)
    ema[chosen] = 3.0  # > 2 x the median (1.0) of the kept channels
    p.monitor.view(p.monitor.count, gi).fill_(1)
    optimizer = torch.optim.SGD(p.model.parameters(), lr=0.1, momentum=0.9)
    wrapper = PruningOptimWrapper(optimizer=optimizer)
    conv = modules[g.name]
    optimizer.state[conv.weight]['momentum_buffer'] = torch.ones_like(conv.weight)

    plan = p.plan()
    assert plan.restored[g.name].nonzero().flatten().tolist() == [chosen]
    assert plan.masks[g.name][chosen]  # exempt from this step
    changed = p.commit(plan)
    wrapper.reset_state(p.optimizer_slices(changed))
    torch.testing.assert_close(conv.weight[chosen], dense[g.name + '.weight'][chosen])
    bn = g.name.replace('conv', 'bn')
    torch.testing.assert_close(modules[bn].bias[chosen], dense[bn + '.bias'][chosen])
    assert not optimizer.state[conv.weight]['momentum_buffer'][chosen].any()
    assert p.protected[g.name][chosen] and int(p.protected[g.name].sum()) == 1
    assert p.history[-1]['restored'] == 1
    assert p.cost() <= p.target_cost(2)  # the step paid for the restored channel
    p.step()  # the last step: no more restoration afterwards
    assert not p.monitor.active


def test_state_dict_round_trips_weights_only_and_continues_identically():
    p = pruner('psap', num_steps=3, protect_factor=1.0)
    wrapper = _wrapper(p.model)
    wrapper.attach(p)
    p.step()
    _train(p.model, wrapper, 3)
    buffer = io.BytesIO()
    torch.save(dict(state=p.state_dict(), weights=p.model.state_dict()), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    twin_model = classifier(seed=1)  # other weights: everything must come from the state
    twin_model.load_state_dict(saved['weights'])
    twin = pruner('psap', twin_model, num_steps=3, protect_factor=1.0)
    twin.load_state_dict(saved['state'])
    assert twin.step_count == 1 and twin.monitor.active
    for n in p.masks:
        assert torch.equal(p.masks[n], twin.masks[n]) and torch.equal(p.protected[n],
                                                                      twin.protected[n])
    torch.testing.assert_close(twin.monitor.ema, p.monitor.ema, rtol=0, atol=0)
    a, b = p.step(), twin.step()
    assert a.restored and {n: m.tolist() for n, m in a.restored.items()} == \
        {n: m.tolist() for n, m in b.restored.items()}
    for n in p.masks:
        assert torch.equal(a.masks[n], b.masks[n])
    for (n, x), y in zip(p.model.state_dict().items(), twin.model.state_dict().values()):
        assert torch.equal(x, y), n


def test_state_for_other_groups_is_refused():
    p = pruner('psap', num_steps=2)
    other = pruner('psap', classifier(depth=50), num_steps=2)
    with pytest.raises(ValueError, match='other channel groups'):
        other.load_state_dict(p.state_dict())
    with pytest.raises(ValueError,
                       match="'method' was saved as str 'psap', this run has str 'l1_global'"):
        pruner('l1_global', num_steps=2).load_state_dict(p.state_dict())


def test_unreachable_target_is_refused():
    # ResNet-18 blocks keep their outputs: at width 8 the stem alone is a third of the FLOPs
    with pytest.raises(ValueError, match=r'unreachable: .* removes at most 59\.\d% of the '
                                         r'flops; lower the target, or set prune_residual'):
        pruner('psap', target=dict(flops=0.95))
    with pytest.raises(ValueError, match='unreachable'):
        pruner('l1_global', target=dict(params=0.95), min_keep=4)


def test_uniform_ratio_that_would_empty_a_layer_is_refused():
    with pytest.raises(ValueError, match=r"keep 0 of 8 channels of group "
                                         r"'backbone.layer1.0.conv1' \(min_keep=1\): the ratio "
                                         r'would empty the layer'):
        L1UniformPruner(target=dict(channels=0.95), num_steps=2).attach(classifier(), X)
    # the same target is fine where ratios may differ between groups
    L1GlobalPruner(target=dict(channels=0.95), num_steps=2).attach(classifier(), X)


@pytest.mark.parametrize('kwargs, match', [
    (dict(target=dict(flops=1.0)), r'must be in \(0, 1\)'),
    (dict(target=dict(latency=0.5)), 'one key out of'),
    (dict(num_steps=0), 'num_steps must be an int >= 1'),
    (dict(round_to=0), 'round_to must be an int >= 1'),
    (dict(min_keep=0), 'min_keep must be an int >= 1'),
    (dict(ratio_floor=1.5), r'ratio_floor must be in \[0, 1\]'),
    (dict(grad_momentum=1.0), r'grad_momentum must be in \[0, 1\)'),
])
def test_bad_arguments_fail_at_construction_without_a_model(kwargs, match):
    args = dict(target=dict(flops=0.5), num_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PSAPPruner(**args)


def test_amp_wrapper_composes_on_cpu(monkeypatch):
    """The mixin wraps ``AmpOptimWrapper.step``; on CPU its accelerator check is lifted and
    the disabled GradScaler reports scale 1."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    if torch.cuda.is_available():
        pytest.skip('CPU-only composition test')
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    p = pruner('psap', num_steps=2)
    with pytest.warns(UserWarning):
        wrapper = _wrapper(p.model, AmpPruningOptimWrapper)
    wrapper.attach(p)
    p.step()
    _train(p.model, wrapper, 2)
    assert wrapper.gradient_scale() == 1.0 and (p.monitor.count == 2).all()
    for g in p.groups:
        assert not dict(p.model.named_modules())[g.name].weight[~p.masks[g.name]].any()


def test_cost_model_counts_only_its_scope():
    model = classifier()
    p = pruner('psap', model)
    whole = ChannelCostModel(model, p.groups, X)
    head = model.head.weight.numel() + model.head.bias.numel()
    assert whole.dense('params') == p.cost_model.dense('params') + head


def test_random_channel_control_keeps_l1_uniform_widths_with_other_channels():
    """The random-channel control (``importance=dict(type='Random')``): L1-uniform's widths,
    channels fixed by the seed alone (not the weights), so a step, a rank or a resumed run
    ranks them the same; another seed picks other channels."""
    runs = {}
    for name, importance, seed in (('l1', None, 0), ('random', dict(type='Random', seed=0), 0),
                                   ('random_again', dict(type='Random', seed=0), 1),
                                   ('random_seed1', dict(type='Random', seed=1), 0)):
        p = pruner('l1_uniform', classifier(seed=seed), importance=importance)
        for _ in range(3):
            p.step()
        runs[name] = p
    widths = {n: p.widths().tolist() for n, p in runs.items()}
    assert widths['random'] == widths['l1'] == widths['random_seed1']
    masks = {n: torch.cat([m.flatten() for m in p.masks.values()]) for n, p in runs.items()}
    # other model weights, same seed: the same channels; another seed or L1: others
    assert torch.equal(masks['random'], masks['random_again'])
    assert not torch.equal(masks['random'], masks['l1'])
    assert not torch.equal(masks['random'], masks['random_seed1'])
    assert runs['random'].ticket_content()['meta']['importance'] == dict(type='Random', seed=0)
