"""The criterion interface (``mmrecprune.sparsity.importance``): element and channel scores of
the built-in criteria, given tensors and gradients, the engine's table, and the accumulator of
gradient criteria (``GradientScores``)."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmrecprune.sparsity import (CRITERION_TYPES, IMPORTANCES, BNScaleImportance, Criterion,
                                 GradientScores, L1Importance, L2Importance, RandomImportance,
                                 TaylorImportance, WeightCriterion, build_criterion,
                                 build_importance, check_criterion, criterion_targets,
                                 find_channel_groups, global_magnitude_masks, init_masks,
                                 register_criterion, unscaled_gradients)

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def resnet(seed=0):
    torch.manual_seed(seed)
    return ResNet(depth=18, base_channels=8)


def backward(model, x=X):
    model.zero_grad()
    sum(o.square().mean() for o in model(x)).backward()


def conv_weights(model):
    return {n: p for n, p in model.named_parameters() if n.endswith('conv1.weight')}


def test_builtin_table_and_builder():
    assert {'L1', 'L2', 'BNScale', 'Taylor', 'Random'} <= set(CRITERION_TYPES)
    assert IMPORTANCES is CRITERION_TYPES and build_importance is build_criterion
    assert isinstance(build_criterion('Taylor'), TaylorImportance)
    assert isinstance(build_criterion(dict(type='mmrecprune.L2', include_inputs=True)),
                      L2Importance)
    assert build_criterion(dict(type='Random', seed=3)).seed == 3
    built = L1Importance()
    assert build_criterion(built) is built
    with pytest.raises(ValueError, match="unknown importance 'L3'"):
        build_criterion(dict(type='L3'))
    with pytest.raises(ValueError, match='importance Random: .*unexpected keyword'):
        build_criterion(dict(type='Random', sed=1))


def test_register_criterion_extends_the_table():
    @register_criterion('TestTableOnly')
    class Doubled(WeightCriterion):
        def score(self, weight, grad):
            return 2 * weight.abs()

    try:
        assert isinstance(build_criterion('TestTableOnly'), Doubled)
        register_criterion('TestTableOnly')(Doubled)  # the same class again: fine
        with pytest.raises(KeyError, match='already registered'):
            register_criterion('TestTableOnly')(L1Importance)
        # the MMEngine registry finds criteria added to the table after its import
        from mmrecprune.registry import CRITERIA
        assert isinstance(CRITERIA.build(dict(type='mmrecprune.TestTableOnly')), Doubled)
    finally:
        CRITERION_TYPES.pop('TestTableOnly')
        from mmrecprune.registry import CRITERIA
        CRITERIA.module_dict.pop('TestTableOnly', None)


def test_magnitude_element_scores_are_absolute_weights():
    params = conv_weights(resnet())
    for criterion in (L1Importance(), L2Importance()):
        scores = criterion.element_scores(params)
        assert list(scores) == list(params)
        for n, p in params.items():
            assert torch.equal(scores[n], p.detach().abs())
            assert not scores[n].requires_grad
    # ranked like the weights themselves: the same masks
    masks = init_masks(params)
    ref = global_magnitude_masks(params, masks, 0.3)
    got = global_magnitude_masks(L1Importance().element_scores(params), masks, 0.3)
    assert all(torch.equal(ref[n], got[n]) for n in ref)


def test_taylor_element_and_channel_scores_from_gradients():
    model = resnet()
    params = conv_weights(model)
    with pytest.raises(RuntimeError, match='backward'):
        TaylorImportance().element_scores(params)
    backward(model)
    scores = TaylorImportance().element_scores(params)
    for n, p in params.items():
        torch.testing.assert_close(scores[n], (p * p.grad).abs(), rtol=0, atol=0)
    # given gradients replace .grad (e.g. unscaled or accumulated ones)
    given = {n: torch.ones_like(p) for n, p in params.items()}
    scores = TaylorImportance().element_scores(params, grads=given)
    assert all(torch.equal(scores[n], p.detach().abs()) for n, p in params.items())
    # channels: the sum of |w * g| over each channel's filters, from .grad or given gradients
    group = find_channel_groups(model, X[:1])[0]
    conv = model.layer1[0].conv1
    expected = (conv.weight * conv.weight.grad).abs().sum((1, 2, 3))
    torch.testing.assert_close(TaylorImportance()(model, group), expected)
    doubled = {name: 2 * dict(model.named_modules())[name].weight.grad
               for name, _ in group.members}
    torch.testing.assert_close(TaylorImportance()(model, group, grads=doubled), 2 * expected)


def test_random_scores_are_fixed_by_seed_and_name():
    params = conv_weights(resnet())
    a = RandomImportance(seed=0).element_scores(params)
    b = RandomImportance(seed=0).element_scores({n: p * 7 for n, p in params.items()})
    c = RandomImportance(seed=1).element_scores(params)
    for n, p in params.items():
        assert a[n].shape == p.shape and torch.equal(a[n], b[n])  # not from the weights
        assert not torch.equal(a[n], c[n])
    first, second = list(params)[:2]
    assert not torch.equal(a[first].flatten()[:50], a[second].flatten()[:50])
    model = resnet()
    group = find_channel_groups(model, X[:1])[0]
    scores = RandomImportance(seed=0)(model, group)
    assert scores.shape == (group.num_channels, )
    assert torch.equal(scores, RandomImportance(seed=0)(resnet(seed=1), group))
    assert not torch.equal(scores, RandomImportance(seed=2)(model, group))


def test_a_weight_criterion_defines_score_only():
    class Cubed(WeightCriterion):
        def score(self, weight, grad):
            return weight.abs().pow(3)

    model = resnet()
    group = find_channel_groups(model, X[:1])[0]
    conv = model.layer1[0].conv1
    torch.testing.assert_close(Cubed()(model, group), conv.weight.detach().abs().pow(3).sum(
        (1, 2, 3)))
    with_inputs = Cubed(include_inputs=True)(model, group)
    torch.testing.assert_close(with_inputs, conv.weight.detach().abs().pow(3).sum((1, 2, 3)) +
                               model.layer1[0].conv2.weight.detach().abs().pow(3).sum((0, 2, 3)))
    # scores of given tensors in place of a member's weight
    zero = {'layer1.0.conv1': torch.zeros_like(conv.weight)}
    assert torch.equal(Cubed()(model, group, weights=zero), torch.zeros(group.num_channels))


def test_targets_and_the_check_of_what_a_pruner_ranks():
    assert criterion_targets(L1Importance()) == ('elements', 'channels')
    assert criterion_targets(BNScaleImportance()) == ('channels', )
    assert criterion_targets(lambda modules, group, weights=None: None) == ('channels', )
    with pytest.raises(NotImplementedError, match='does not score weights'):
        BNScaleImportance().element_scores(conv_weights(resnet()))
    with pytest.raises(ValueError, match=r"MyPruner: importance BNScaleImportance scores "
                                         r"\('channels',\), not elements"):
        check_criterion(BNScaleImportance(), 'elements', 'MyPruner')
    assert check_criterion(TaylorImportance(), 'elements', 'MyPruner') is not None

    class ElementsOnly(Criterion):
        targets = ('elements', )

    with pytest.raises(NotImplementedError, match='does not score channels'):
        ElementsOnly()(resnet(), find_channel_groups(resnet(), X[:1])[0])


def test_gradient_scores_average_steps_and_skip_overflow():
    acc = GradientScores()
    assert acc.mean() is None and acc.statistics() == []
    assert acc.add({'a': torch.tensor([1.0, 2.0]), 'b': torch.tensor([4.0])})
    assert not acc.add({'a': torch.tensor([float('inf'), 0.0]), 'b': torch.tensor([1.0])})
    assert acc.add({'a': torch.tensor([3.0, 4.0]), 'b': torch.tensor([0.0])})
    assert acc.steps == 2
    mean = acc.mean()
    assert torch.equal(mean['a'], torch.tensor([2.0, 3.0])) and torch.equal(mean['b'],
                                                                            torch.tensor([2.0]))
    # DDP averages the sums in place
    for t in acc.statistics():
        t.mul_(0.5)
    assert torch.equal(acc.mean()['a'], torch.tensor([1.0, 1.5]))
    state = acc.state_dict()
    other = GradientScores()
    other.load_state_dict(state)
    assert other.steps == 2 and torch.equal(other.mean()['a'], acc.mean()['a'])
    with pytest.raises(ValueError, match='other tensors'):
        acc.add({'c': torch.zeros(1)})
    acc.reset()
    assert acc.mean() is None and acc.steps == 0
    other.load_state_dict(None)
    assert other.mean() is None


def test_unscaled_gradients():
    w = torch.nn.Parameter(torch.ones(3))
    v = torch.nn.Parameter(torch.ones(2))  # no gradient: left out
    (4 * w).sum().backward()
    assert unscaled_gradients({'w': w, 'v': v}, 1.0)['w'] is w.grad
    grads = unscaled_gradients({'w': w, 'v': v}, 4.0)
    assert list(grads) == ['w'] and torch.equal(grads['w'], torch.ones(3))
