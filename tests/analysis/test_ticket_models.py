"""load_models / ticket_costs / latency_ratio (mmrecprune/analysis/): the backbones of a
ticket or a config, and what a ticket keeps of its dense backbone."""
import pytest
import torch

from mmrecprune.analysis import conv_widths, latency_ratio, load_models, ticket_costs
from mmrecprune.cli import CLIError
from tests.conftest import repo_path


def test_costs_of_unstructured_and_structured_tickets(r18_w16_tickets):
    params, flops = ticket_costs(r18_w16_tickets['unstructured'])
    assert flops == 100.0 and 30 < params < 70  # masks: dense FLOPs, the kept weights counted
    params, flops = ticket_costs(r18_w16_tickets['structured'])
    assert 40 < flops < 60 and params < 100  # -50 % FLOPs, slimmed
    dense, slim, ticket = load_models(r18_w16_tickets['structured'])
    widths = conv_widths(dense, slim)
    assert all(kept <= full for kept, full in widths.values())
    assert any(kept < full for kept, full in widths.values()) and ticket.kind == 'structured'


def test_a_config_gives_its_dense_backbone_and_options_need_a_config(r18_w16_tickets):
    dense, pruned, ticket = load_models(
        repo_path('configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'),
        {'model.backbone.base_channels': 8})
    assert pruned is None and ticket is None and dense.conv1.out_channels == 8
    with pytest.raises(CLIError, match='apply to a config'):
        load_models(r18_w16_tickets['unstructured'], {'a': 1})


def test_latency_ratio_of_a_slim_ticket(r18_w16_tickets):
    threads = torch.get_num_threads()
    try:
        assert latency_ratio(r18_w16_tickets['structured'], repeats=1) > 0
    finally:
        torch.set_num_threads(threads)  # it times on one thread
