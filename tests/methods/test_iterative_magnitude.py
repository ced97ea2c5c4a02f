"""IterativeMagnitudePruner and OneShotMagnitudePruner on bare modules, built from configs as the
hooks build them: arguments, rounds and rewinding, the criterion that ranks the weights
(magnitude: the masks of the weights' own ranking; Taylor; random), state and tickets."""
import io

import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn

from mmrecprune.methods import IterativeMagnitudePruner, OneShotMagnitudePruner
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import (global_magnitude_masks, init_masks, layerwise_magnitude_masks,
                                 nm_magnitude_masks, nm_violations, prunable_parameters)

pytestmark = pytest.mark.usefixtures('single_thread')
INCLUDE, EXCLUDE = ('backbone.*', ), ('conv1.*', 'stem.*')


class Classifier(nn.Module):
    """backbone + pooled linear head, keys ``backbone.*`` / ``head.*`` like ImageClassifier."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet(depth=18, base_channels=8, out_indices=(3, ))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def classifier(seed=0):
    torch.manual_seed(seed)
    return Classifier()


def build(model=None, snapshot=True, type='IterativeMagnitudePruner', **kwargs):
    pruner = PRUNERS.build(dict(type=type, **kwargs))
    pruner.attach(classifier() if model is None else model)
    if snapshot and hasattr(pruner, 'snapshot'):
        pruner.snapshot()
    return pruner


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4, ), generator=g)


def train_step(pruner, seed, scale=1.0, lr=0.0):
    """One step as the PruningOptimWrapper runs it: backward (the loss times the AMP ``scale``),
    ``before_optimizer_step(scale)``, an SGD step of ``lr``, ``after_optimizer_step()``."""
    model = pruner.model
    x, y = batch(seed)
    model.zero_grad()
    (scale * nn.functional.cross_entropy(model(x), y)).backward()
    pruner.before_optimizer_step(scale)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad / scale)
    pruner.after_optimizer_step()


def drift(model, seed):
    """Move the weights a little, as training between rounds would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def same_masks(a, b):
    return list(a) == list(b) and all(torch.equal(a[n].cpu(), b[n].cpu()) for n in a)


# ---- arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, match', [
    (dict(prune_ratio=0.0), r'prune_ratio must be in \(0, 1\)'),
    (dict(prune_ratio=1.0), r'prune_ratio must be in \(0, 1\)'),
    (dict(rewind_to='epoch'), 'rewind_to must be one of'),
    (dict(rewind_iter=-1), 'rewind_iter must be an int >= 0'),
    (dict(ranking='per_filter'), 'ranking must be one of'),
    (dict(pattern='3:2'), 'pattern'),
    (dict(importance=dict(type='L3')), 'unknown importance'),
    (dict(importance=dict(type='Random', sed=0)), 'importance Random'),
    (dict(importance=dict(type='BNScale')), r"scores \('channels',\), not elements"),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PRUNERS.build(dict(type='IterativeMagnitudePruner', **kwargs))


@pytest.mark.parametrize('kwargs, match', [
    (dict(sparsity=1.0), r'sparsity must be a fraction in \(0, 1\)'),
    (dict(ranking='per_filter'), 'ranking must be one of'),
    (dict(importance=dict(type='BNScale')), 'not elements'),
])
def test_one_shot_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PRUNERS.build(dict(type='OneShotMagnitudePruner', **kwargs))


def test_attach_selects_backbone_convs_but_the_stem():
    pruner = build()
    assert list(pruner.params) == list(prunable_parameters(pruner.model, INCLUDE, EXCLUDE))
    assert 'backbone.conv1.weight' not in pruner.params
    assert all(n.startswith('backbone.layer') for n in pruner.params)
    with pytest.raises(ValueError, match='no prunable conv weights'):
        build(include=('neck.*', ))


# ---- magnitude: the masks of the weights' own ranking (the code path before criteria) --------
@pytest.mark.parametrize('importance', [None, dict(type='L1'), dict(type='mmrecprune.L2')])
@pytest.mark.parametrize('ranking, pattern', [('global', None), ('layerwise', None),
                                              ('global', '2:4')])
def test_magnitude_masks_are_unchanged(importance, ranking, pattern):
    model = classifier()
    pruner = build(model, rewind_to='none', ranking=ranking, pattern=pattern,
                   importance=importance)
    params = prunable_parameters(model, INCLUDE, EXCLUDE)
    masks = init_masks(params)
    for r in range(1, 4):
        drift(model, r)
        with torch.no_grad():  # what training does to pruned weights: they stay zero
            for n, p in params.items():
                p.mul_(masks[n])
        if pattern is not None:
            expected = nm_magnitude_masks(params, masks, pattern, 0.2, ranking)
        elif ranking == 'global':
            expected = global_magnitude_masks(params, masks, 0.2)
        else:
            expected = layerwise_magnitude_masks(params, masks, 0.2)
        pruner.step()
        assert same_masks(pruner.masks, expected), r
        masks = expected
    assert pruner.ticket_content()['meta']['importance'] == (importance or dict(type='L1'))


def test_one_shot_magnitude_masks_are_unchanged():
    model = classifier()
    pruner = build(model, type='OneShotMagnitudePruner', sparsity=0.6)
    params = prunable_parameters(model, INCLUDE, EXCLUDE)
    expected = layerwise_magnitude_masks(params, init_masks(params), 0.6)
    pruner.step()
    assert same_masks(pruner.masks, expected)
    assert pruner.ticket_content()['meta']['importance'] == dict(type='L1')


# ---- rounds and rewinding ------------------------------------------------------------------
def test_rounds_reach_the_schedule_and_rewind_the_survivors():
    model = classifier()
    pruner = build(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    previous = init_masks(pruner.params)
    for r in range(1, 4):
        drift(model, r)
        changed = pruner.step()
        assert pruner.step_count == r
        assert pruner.sparsity == pytest.approx(1 - 0.8 ** r, abs=1e-3)
        for n, m in pruner.masks.items():
            assert not (m & ~previous[n]).any()  # pruned weights stay pruned
            assert torch.equal(changed[n], ~m)
        previous = pruner.masks
        # survivors and the rest of the model (BN, head) back at the start; pruned ones zero
        for k, v in model.state_dict().items():
            expected = start[k] * pruner.masks[k] if k in pruner.masks else start[k]
            assert torch.equal(v, expected), k
    # training keeps the pruned weights at zero
    train_step(pruner, 0, lr=0.1)
    assert all((p[~pruner.masks[n]] == 0).all() for n, p in pruner.params.items())


def test_rewind_none_keeps_the_trained_values():
    model = classifier()
    pruner = build(model, rewind_to='none')
    drift(model, 1)
    trained = {n: p.detach().clone() for n, p in pruner.params.items()}
    pruner.step()
    for n, p in pruner.params.items():
        assert torch.equal(p.detach(), trained[n] * pruner.masks[n])


def test_state_resumes_with_the_counter_under_its_old_key():
    model = classifier()
    pruner = build(model)
    for r in (1, 2):
        drift(model, r)
        pruner.step()
    state = pruner.state_dict()
    assert state['step'] == 2 and 'round' not in state
    for key in ('step', 'round'):  # 'round': the key of checkpoints written by earlier code
        saved = dict(state)
        saved[key] = saved.pop('step')
        resumed = build(classifier(), snapshot=False)
        resumed.load_state_dict(saved)
        assert resumed.step_count == 2 and resumed.round == 2
        assert same_masks(resumed.masks, pruner.masks)


def test_no_rewind_target_is_an_error():
    pruner = build(snapshot=False)
    with pytest.raises(RuntimeError, match='no rewind target'):
        pruner.step()


# ---- Taylor: |w * dL/dw| averaged over the round's optimizer steps ---------------------------
def expected_taylor(pruner, seeds, scale=1.0):
    """The mean over ``seeds``' batches of |w * g|, computed here by hand on a copy."""
    sums = None
    for seed in seeds:
        model = pruner.model
        x, y = batch(seed)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        step = {n: (p.detach() * p.grad * pruner.masks[n]).abs()
                for n, p in pruner.params.items()}
        sums = step if sums is None else {n: sums[n] + step[n] for n in sums}
    return {n: s / len(seeds) for n, s in sums.items()}


def test_taylor_ranks_by_the_mean_saliency_of_the_round():
    model = classifier()
    pruner = build(model, importance=dict(type='mmrecprune.Taylor'))
    with pytest.raises(RuntimeError, match='needs gradients, but no optimizer step ran'):
        pruner.plan()
    scores = expected_taylor(pruner, (1, 2))
    for seed in (1, 2):
        train_step(pruner, seed)
    assert pruner.gradient_scores.steps == 2
    expected = global_magnitude_masks(scores, init_masks(scores), 0.2)
    plan = pruner.plan()
    assert same_masks(plan.masks, expected)
    # not the magnitude ranking
    assert not same_masks(plan.masks, global_magnitude_masks(
        pruner.params, init_masks(pruner.params), 0.2))
    pruner.commit(plan)
    assert pruner.sparsity == pytest.approx(0.2, abs=1e-3)
    assert pruner.ticket_content()['meta']['importance'] == dict(type='mmrecprune.Taylor')
    # a new round starts a new average: round 2 ranks its own steps only, among survivors
    with pytest.raises(RuntimeError, match='no optimizer step ran'):
        pruner.plan()
    scores = expected_taylor(pruner, (3, ))
    train_step(pruner, 3)
    assert same_masks(pruner.plan().masks, global_magnitude_masks(scores, pruner.masks, 0.2))


def test_taylor_reads_amp_scaled_gradients_at_their_true_size():
    runs = []
    for scale in (1.0, 1024.0):
        pruner = build(importance=dict(type='Taylor'))
        for seed in (1, 2):
            train_step(pruner, seed, scale=scale)
        runs.append(pruner)
    for a, b in zip(runs[0].gradient_scores.mean().values(),
                    runs[1].gradient_scores.mean().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    # an overflow step (inf gradients) is skipped
    pruner = runs[0]
    for p in pruner.params.values():
        p.grad = torch.full_like(p, float('inf'))
    pruner.before_optimizer_step()
    assert pruner.gradient_scores.steps == 2


def test_taylor_sums_are_synced_and_survive_a_checkpoint():
    pruner = build(importance=dict(type='Taylor'))
    assert pruner.statistics() == []
    for seed in (1, 2):
        train_step(pruner, seed)
    stats = pruner.statistics()  # what DDP ranks average in place
    assert [s.shape for s in stats] == [p.shape for p in pruner.params.values()]
    buffer = io.BytesIO()
    torch.save(pruner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = build(importance=dict(type='Taylor'))
    resumed.load_state_dict(state)
    assert resumed.gradient_scores.steps == 2
    assert same_masks(resumed.plan().masks, pruner.plan().masks)
    # magnitude pruners keep no gradient state
    assert 'gradient_scores' not in build().state_dict()


def test_taylor_under_an_nm_pattern_reaches_it():
    pruner = build(importance=dict(type='Taylor'), pattern='2:4', prune_ratio=0.5,
                   rewind_to='none')
    train_step(pruner, 1)
    pruner.step()
    assert pruner.pattern_reached and not nm_violations(pruner.masks, '2:4')


# ---- random: the control ----------------------------------------------------------------------
def test_random_control_is_fixed_by_its_seed_not_by_the_weights():
    runs = {}
    for name, seed, model_seed in (('a', 0, 0), ('same', 0, 1), ('other', 1, 0)):
        pruner = build(classifier(model_seed), importance=dict(type='Random', seed=seed))
        for _ in range(2):
            pruner.step()
        runs[name] = pruner
    assert same_masks(runs['a'].masks, runs['same'].masks)
    assert not same_masks(runs['a'].masks, runs['other'].masks)
    assert runs['a'].sparsity == pytest.approx(0.36, abs=1e-3)
    magnitude = build()
    for _ in range(2):
        magnitude.step()
    assert not same_masks(runs['a'].masks, magnitude.masks)
    assert runs['a'].ticket_content()['meta']['importance'] == dict(type='Random', seed=0)


# ---- one-shot ----------------------------------------------------------------------------------
def test_one_shot_taylor_averages_every_step_before_the_cut():
    pruner = build(type='OneShotMagnitudePruner', sparsity=0.5,
                   importance=dict(type='mmrecprune.Taylor'))
    with pytest.raises(RuntimeError, match='needs gradients'):
        pruner.plan()
    scores = expected_taylor(pruner, (1, 2))
    for seed in (1, 2):
        train_step(pruner, seed)
    expected = layerwise_magnitude_masks(scores, init_masks(scores), 0.5)
    pruner.step()
    assert same_masks(pruner.masks, expected)
    # after the cut training keeps the pruned entries and adds no scores
    train_step(pruner, 3, lr=0.1)
    assert pruner.gradient_scores.steps == 2
    assert all((p[~pruner.masks[n]] == 0).all() for n, p in pruner.params.items())
    assert pruner.ticket_content()['meta']['importance'] == dict(type='mmrecprune.Taylor')


def test_one_shot_taylor_state_before_the_cut_resumes():
    pruner = build(type='OneShotMagnitudePruner', importance=dict(type='Taylor'))
    train_step(pruner, 1)
    resumed = build(type='OneShotMagnitudePruner', importance=dict(type='Taylor'))
    resumed.load_state_dict(pruner.state_dict())
    assert same_masks(resumed.plan().masks, pruner.plan().masks)


def test_one_shot_random_control():
    a = build(type='OneShotMagnitudePruner', importance=dict(type='Random'), ranking='global')
    b = build(classifier(seed=3), type='OneShotMagnitudePruner', importance=dict(type='Random'),
              ranking='global')
    a.step()
    b.step()
    assert same_masks(a.masks, b.masks) and a.sparsity == 0.5


def test_built_criteria_are_accepted():
    from mmrecprune.sparsity import TaylorImportance
    criterion = TaylorImportance()
    assert IterativeMagnitudePruner(importance=criterion).importance is criterion
    assert OneShotMagnitudePruner(importance=criterion).importance is criterion


# ---- the shipped Taylor-IMP config, in a real run ------------------------------------------------
def test_taylor_imp_config_prunes_by_the_gradients_of_each_round(tmp_path):
    from mmengine.runner import Runner

    from mmrecprune.tickets import load_ticket
    from tests.conftest import tiny_cls_cfg
    cfg = tiny_cls_cfg(tmp_path, config='configs/imp/imp-taylor_r18-w16_7r-1e_fashionmnist.py',
                       max_epochs=2)
    cfg.load_from = None  # rewinds to the start of the run
    cfg.custom_hooks[0].update(rounds=2, epochs_per_round=1)
    runner = Runner.from_cfg(cfg)
    pruner = next(h for h in runner.hooks if type(h).__name__ == 'LotteryTicketHook').pruner
    steps = []
    commit = pruner.commit
    pruner.commit = lambda plan: (steps.append(pruner.gradient_scores.steps), commit(plan))[1]
    runner.train()
    assert steps == [len(runner.train_dataloader)] * 2  # every optimizer step of each round
    ticket = load_ticket(str(tmp_path / 'tickets' / 'round_2.pth'))
    assert ticket.meta['importance'] == dict(type='mmrecprune.Taylor')
    assert ticket.meta['sparsity'] == pytest.approx(0.36, abs=1e-3)
