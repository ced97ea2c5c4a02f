"""Mean-value recovery: every candidate mode, vectorised, exact on pruned entries only."""
import pytest
import torch

from mmrecprune.sparsity import RECOVERY_MODES, apply_recovery, recovery_fill


def _weight_and_mask():
    torch.manual_seed(0)
    w = torch.randn(3, 2, 2, 2)
    mask = torch.rand(w.shape) > 0.5
    mask[1] = True  # filter 1 has nothing pruned
    return w, mask


def test_each_mode_by_its_definition():
    w, mask = _weight_and_mask()
    pruned = w[~mask]
    torch.testing.assert_close(recovery_fill(w, mask, 'layer_mean'), pruned.mean())
    layer_abs = recovery_fill(w, mask, 'layer_abs_signed')
    torch.testing.assert_close(layer_abs, torch.sign(w) * pruned.abs().mean())
    per_filter = recovery_fill(w, mask, 'filter_mean')
    per_filter_abs = recovery_fill(w, mask, 'filter_abs_signed')
    assert per_filter.shape == (3, 1, 1, 1)
    for f in range(3):
        values = w[f][~mask[f]]
        expected = values.mean() if len(values) else torch.tensor(0.)
        torch.testing.assert_close(per_filter[f].flatten()[0], expected)
        expected_abs = values.abs().mean() if len(values) else torch.tensor(0.)
        torch.testing.assert_close(per_filter_abs[f], torch.sign(w[f]) * expected_abs)
    assert recovery_fill(w, mask, 'zero') is None


@pytest.mark.parametrize('mode', RECOVERY_MODES)
def test_apply_recovery_changes_only_pruned_entries(mode):
    w, mask = _weight_and_mask()
    params = dict(conv=w.clone())
    fills = apply_recovery(params, dict(conv=mask), mode)
    assert torch.equal(params['conv'][mask], w[mask])
    if mode == 'zero':
        assert fills == {} and not params['conv'][~mask].any()
    else:
        expected = torch.broadcast_to(fills['conv'], w.shape)[~mask]
        assert torch.equal(params['conv'][~mask], expected)


def test_unknown_mode_is_refused():
    w, mask = _weight_and_mask()
    with pytest.raises(ValueError, match='recovery must be one of'):
        recovery_fill(w, mask, 'median')
