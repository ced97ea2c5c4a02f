"""PruningOptimWrapper / AmpPruningOptimWrapper (and their old names) serving a real pruner,
with real modules and optimizers."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmengine.optim import OptimWrapper, build_optim_wrapper
from torch import nn

from mmrecprune.methods import IterativeMagnitudePruner, PruningPlan
from mmrecprune.optim import (AmpMaskedOptimWrapper, AmpPruningOptimWrapper, MaskedOptimWrapper,
                              ProtectiveOptimWrapper, PruningOptimWrapper)
from mmrecprune.registry import OPTIM_WRAPPERS
from mmrecprune.sparsity import global_magnitude_masks, init_masks, prunable_parameters

OPTIMIZERS = {
    'sgd_momentum_wd': lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-2),
    'sgd_nesterov': lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                               weight_decay=1e-3),
    'adamw': lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-1),
    'adam_l2': lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
}


pytestmark = pytest.mark.usefixtures('single_thread')


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = ResNet(depth=18, base_channels=8, out_indices=(3,))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))


def _setup(seed=0, sparsity=0.6):
    torch.manual_seed(seed)
    model = _Net()
    params = prunable_parameters(model, include=('backbone.*',))
    masks = global_magnitude_masks(params, init_masks(params), sparsity)
    return model, params, masks


def _pruner(model, masks):
    """An attached pruner holding ``masks`` (committed as one round, no rewinding)."""
    pruner = IterativeMagnitudePruner(rewind_to='none')
    pruner.attach(model)
    pruner.commit(PruningPlan(step=1, masks=masks))
    return pruner


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g))
            for _ in range(n)]


def _train(model, wrapper, batches):
    wrapper.initialize_count_status(model, 0, len(batches))
    for x, y in batches:
        with wrapper.optim_context(model):
            loss = F.cross_entropy(model(x), y)
        wrapper.update_params(loss)


def _assert_pruned_zero(params, masks):
    for name, p in params.items():
        assert torch.equal(p.detach()[~masks[name]], torch.zeros(int((~masks[name]).sum()))), \
            f'{name}: pruned weights moved'


@pytest.mark.parametrize('accumulative_counts', [1, 3])
@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero(optimizer, accumulative_counts):
    model, params, masks = _setup()
    wrapper = PruningOptimWrapper(OPTIMIZERS[optimizer](model.parameters()),
                                 accumulative_counts=accumulative_counts)
    _train(model, wrapper, _batches(3, seed=2))  # dense phase: momentum / moments build up
    state = wrapper.optimizer.state[params['backbone.layer1.0.conv1.weight']]
    assert any(torch.is_tensor(v) and v.dim() == 4 and v.abs().sum() > 0 for v in state.values())

    wrapper.attach(_pruner(model, masks))
    _assert_pruned_zero(params, masks)
    for name, p in params.items():  # state of newly pruned entries restarts from zero
        for value in wrapper.optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert not value[~masks[name]].any()

    kept_before = {n: p.detach()[masks[n]].clone() for n, p in params.items()}
    head_before = model.head.weight.detach().clone()
    _train(model, wrapper, _batches(7))
    _assert_pruned_zero(params, masks)
    assert all(not torch.equal(p.detach()[masks[n]], kept_before[n]) for n, p in params.items())
    assert not torch.equal(model.head.weight.detach(), head_before)
    assert wrapper.pruner.masks.keys() == masks.keys()


def test_plain_optim_wrapper_would_move_pruned_weights():
    """Negative control: masking once is not enough with momentum and weight decay."""
    model, params, masks = _setup()
    wrapper = OptimWrapper(OPTIMIZERS['sgd_momentum_wd'](model.parameters()))
    _train(model, wrapper, _batches(2, seed=2))
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(masks[n])
    _train(model, wrapper, _batches(2))
    assert any(p.detach()[~masks[n]].any() for n, p in params.items())


def test_gradients_of_pruned_entries_are_zeroed_before_clipping():
    model, params, masks = _setup()
    wrapper = PruningOptimWrapper(OPTIMIZERS['sgd_momentum_wd'](model.parameters()),
                                 clip_grad=dict(max_norm=1e-3))
    wrapper.attach(_pruner(model, masks))
    (x, y), = _batches(1)
    wrapper.backward(F.cross_entropy(model(x), y))
    assert any(p.grad[~masks[n]].any() for n, p in params.items())
    wrapper.step()
    assert all(not p.grad[~masks[n]].any() for n, p in params.items())
    _assert_pruned_zero(params, masks)


def test_without_masks_behaves_like_optim_wrapper():
    results = []
    for cls in (OptimWrapper, PruningOptimWrapper):
        model, _, _ = _setup()
        _train(model, cls(OPTIMIZERS['sgd_momentum_wd'](model.parameters()),
                          accumulative_counts=2), _batches(4))
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_bad_masks_are_refused_and_detaching_stops_masking():
    model, params, masks = _setup()
    wrapper = PruningOptimWrapper(OPTIMIZERS['adamw'](model.parameters()))
    name = next(iter(params))
    pruner = IterativeMagnitudePruner(rewind_to='none')
    pruner.attach(model)
    with pytest.raises(ValueError, match=f'mask of {name!r} has shape'):
        pruner.commit(PruningPlan(step=1, masks=dict(masks, **{name: masks[name].flatten()})))
    with pytest.raises(ValueError, match='missing masks'):
        pruner.commit(PruningPlan(step=1, masks={}))
    wrapper.attach(_pruner(model, masks))
    assert all(torch.equal(wrapper.pruner.masks[n], masks[n]) for n in masks)
    wrapper.attach(None)
    assert wrapper.pruner is None
    with torch.no_grad():
        params[name].fill_(1.0)
    _train(model, wrapper, _batches(1))
    assert params[name].detach().ne(0).all()  # masking stopped


def test_reset_state_clears_all_or_slices_and_keeps_lr_and_groups():
    model, params, masks = _setup()
    wrapper = PruningOptimWrapper(OPTIMIZERS['sgd_momentum_wd'](model.parameters()))
    wrapper.attach(_pruner(model, masks))
    _train(model, wrapper, _batches(2))
    weight = params['backbone.layer1.0.conv1.weight']
    wrapper.reset_state([(weight, 0, torch.tensor([0, 2]))])
    buf = wrapper.optimizer.state[weight]['momentum_buffer']
    assert not buf[[0, 2]].any() and buf[1].any()
    (x, y), = _batches(1)
    wrapper.backward(F.cross_entropy(model(x), y))
    wrapper.param_groups[0]['lr'] = 0.123
    wrapper.reset_state()
    assert len(wrapper.optimizer.state) == 0
    assert all(p.grad is None for p in model.parameters())
    assert wrapper.param_groups[0]['lr'] == 0.123
    _train(model, wrapper, _batches(2))  # training continues with fresh state
    _assert_pruned_zero(params, masks)


class _PenalisedPruner(IterativeMagnitudePruner):
    """A pruner whose ``regularize`` adds ``sum(head.weight)``: its gradient is all ones."""

    def regularize(self, loss):
        return loss + self.model.head.weight.sum()


def test_backward_propagates_the_pruners_regularized_loss():
    grads = []
    for pruner_cls in (IterativeMagnitudePruner, _PenalisedPruner):
        model, _, masks = _setup()
        pruner = pruner_cls(rewind_to='none')
        pruner.attach(model)
        pruner.commit(PruningPlan(step=1, masks=masks))
        wrapper = PruningOptimWrapper(OPTIMIZERS['sgd_momentum_wd'](model.parameters()))
        wrapper.attach(pruner)
        (x, y), = _batches(1)
        wrapper.backward(F.cross_entropy(model(x), y))
        grads.append(model.head.weight.grad.clone())
    torch.testing.assert_close(grads[1] - grads[0], torch.ones_like(grads[0]))


def test_penalty_weighs_the_same_with_gradient_accumulation():
    """update_params adds the penalty before the accumulation factor: two half-batches with
    accumulative_counts=2 give the gradient of one step without accumulation (before the
    fix the penalty was added after the factor: twice its gradient)."""
    grads = []
    for counts in (1, 2):
        model, _, masks = _setup()
        pruner = _PenalisedPruner(rewind_to='none')
        pruner.attach(model)
        pruner.commit(PruningPlan(step=1, masks=masks))
        wrapper = PruningOptimWrapper(OPTIMIZERS['sgd_momentum_wd'](model.parameters()),
                                      accumulative_counts=counts)
        wrapper.attach(pruner)
        wrapper.initialize_count_status(model, 0, counts)
        (x, y), = _batches(1)
        for _ in range(counts):
            wrapper.backward(wrapper.scale_loss(F.cross_entropy(model(x), y)))
        grads.append(model.head.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])


def test_registered_and_built_from_config():
    # the names of earlier releases are the same two classes, so old configs work unchanged
    for name in ('PruningOptimWrapper', 'MaskedOptimWrapper', 'ProtectiveOptimWrapper'):
        assert OPTIM_WRAPPERS.get(name) is PruningOptimWrapper
        assert OPTIM_WRAPPERS.get('Amp' + name) is AmpPruningOptimWrapper
    assert MaskedOptimWrapper is ProtectiveOptimWrapper is PruningOptimWrapper
    assert AmpMaskedOptimWrapper is AmpPruningOptimWrapper
    model, _, _ = _setup()
    wrapper = build_optim_wrapper(model, dict(
        type='mmrecprune.MaskedOptimWrapper', accumulative_counts=2,
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)))
    assert isinstance(wrapper, PruningOptimWrapper) and wrapper.pruner is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason='AmpOptimWrapper needs a GPU')
def test_amp_wrapper_keeps_zeros_on_gpu():
    model, params, masks = _setup()
    model = model.cuda()
    params = prunable_parameters(model, include=('backbone.*',))
    wrapper = AmpPruningOptimWrapper(optimizer=OPTIMIZERS['sgd_momentum_wd'](model.parameters()),
                                     accumulative_counts=2)
    wrapper.attach(_pruner(model, {n: m.cuda() for n, m in masks.items()}))
    wrapper.initialize_count_status(model, 0, 6)
    for x, y in _batches(6):
        with wrapper.optim_context(model):
            loss = F.cross_entropy(model(x.cuda()), y.cuda())
        wrapper.update_params(loss)
    for name, p in params.items():
        assert not p.detach()[~masks[name].cuda()].any()


def test_amp_wrapper_step_composition_on_cpu(monkeypatch):
    """The mixin wraps ``AmpOptimWrapper.step`` (loss scaler step + update) correctly.

    ``AmpOptimWrapper`` refuses to build without an accelerator; on CPU we lift that check, and
    torch's CUDA ``GradScaler`` then disables itself (scale 1, plain ``optimizer.step``), which
    still runs the full ``AmpOptimWrapper.step`` / ``backward`` code path.
    """
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    if torch.cuda.is_available():
        pytest.skip('covered by test_amp_wrapper_keeps_zeros_on_gpu')
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    model, params, masks = _setup()
    with pytest.warns(UserWarning):
        wrapper = AmpPruningOptimWrapper(
            optimizer=OPTIMIZERS['sgd_momentum_wd'](model.parameters()), accumulative_counts=2,
            clip_grad=dict(max_norm=10.0))
    _train(model, wrapper, _batches(2, seed=2))
    wrapper.attach(_pruner(model, masks))
    _train(model, wrapper, _batches(5))
    _assert_pruned_zero(params, masks)
