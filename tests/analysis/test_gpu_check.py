"""The GPU check's CPU side (mmrecprune/analysis/gpu_check/, run on a GPU by
tools/benchmarks/gpu_check.sh): its arguments, the JSON it writes, the latency code path at tiny
sizes on the CPU, the 2:4 per-layer path with a stand-in for the sparse kernel, and the focal
loss it swaps in when mmcv has no ops."""
import json
import sys
import types

import pytest
import torch

from mmrecprune.analysis import gpu_check
from mmrecprune.cli import CLIError

pytestmark = pytest.mark.usefixtures('single_thread')
TINY = ['--device', 'cpu', '--dtype', 'float32', '--depth', '18', '--input-size', '32',
        '--batch-sizes', '1', '2', '--nm-batch-sizes', '2', '--repeats', '2', '--warmup', '1',
        '--modes', 'eager', '--no-torch-pruning']


def test_defaults_are_the_issue_plan(tmp_path):
    args = gpu_check.build_parser().parse_args(['--out-dir', str(tmp_path)])
    assert (args.depth, args.dtype, args.batch_sizes, args.nm_batch_sizes, args.flops,
            args.modes) == (50, 'bfloat16', [1, 32, 256], [32, 256], [0.5, 0.75],
                            ['eager', 'compile'])
    assert args.sections == list(gpu_check.SECTIONS) and args.amp_dtypes == ['float16',
                                                                            'bfloat16']


@pytest.mark.parametrize('argv, match', [
    (['--batch-sizes', '0'], 'batch-sizes must be >= 1'),
    (['--flops', '1.5'], r'in \(0, 1\)'),
    (['--repeats', '0'], 'repeats must be >= 1'),
    (['--budget-s', '0'], 'budget-s must be > 0'),
    (['--device', 'meta'], "'cuda' or 'cpu'"),
    (['--device', 'nonsense:x'], 'is not a device'),
])
def test_bad_arguments_are_refused(tmp_path, argv, match):
    with pytest.raises(CLIError, match=match):
        gpu_check.parse_args(['--out-dir', str(tmp_path), *argv])


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU')
def test_cuda_without_a_gpu_is_refused(tmp_path):
    with pytest.raises(CLIError, match='no CUDA device .* --device cpu'):
        gpu_check.parse_args(['--out-dir', str(tmp_path)])


def test_an_earlier_result_is_kept_unless_forced(tmp_path):
    (tmp_path / gpu_check.JSON_NAME).write_text('{"earlier": true}')
    with pytest.raises(CLIError, match='exists; pass --force'):
        gpu_check.parse_args(['--out-dir', str(tmp_path), '--device', 'cpu'])
    assert gpu_check.parse_args(['--out-dir', str(tmp_path), '--device', 'cpu',
                                 '--force']).force
    with pytest.raises(CLIError, match='is a file'):
        gpu_check.parse_args(['--out-dir', str(tmp_path / gpu_check.JSON_NAME), '--device',
                              'cpu'])


def test_report_records_each_section_as_it_ends(tmp_path):
    path = tmp_path / 'r.json'
    report = gpu_check.Report(str(path))
    with report.section('good') as entry:
        entry['checks']['fine'] = True
        entry['figures']['x'] = torch.tensor(2.5)
    assert json.loads(path.read_text())['sections']['good']['status'] == 'ok'
    with report.section('broken') as entry:
        raise RuntimeError('kernel\nnot found')
    with report.section('false check') as entry:
        entry['checks']['masks_exact'] = False
    deadline = gpu_check.Deadline(5)
    with report.section('late', deadline, needs=60) as entry:
        assert entry is None
    with report.section('cpu', skip='needs CUDA') as entry:
        assert entry is None
    sections = json.loads(path.read_text())['sections']
    assert sections['good']['figures']['x'] == 2.5
    assert sections['broken']['status'] == 'failed'
    assert sections['broken']['reason'] == 'RuntimeError: kernel not found'
    assert 'Traceback' in sections['broken']['traceback']
    assert sections['false check']['reason'] == "checks failed: ['masks_exact']"
    assert sections['late']['status'] == 'skipped' and 'the section needs ~60' in \
        sections['late']['reason']
    assert sections['cpu'] == dict(status='skipped', checks={}, figures={}, notes=[],
                                   reason='needs CUDA')


def test_cpu_run_measures_slim_tickets_and_skips_the_gpu_sections(tmp_path, capsys):
    """The latency code path end to end at tiny sizes: one JSON, one PNG, ratios from one
    interleaved run; the CUDA sections are skipped with the reason."""
    data = gpu_check.main(['--out-dir', str(tmp_path), *TINY])
    assert (tmp_path / gpu_check.PNG_NAME).stat().st_size > 0
    saved = json.loads((tmp_path / gpu_check.JSON_NAME).read_text())
    assert saved['sections'].keys() == data['sections'].keys() == set(gpu_check.SECTIONS)
    status = {k: v['status'] for k, v in saved['sections'].items()}
    assert status == dict(amp='skipped', retinanet='skipped', ddp='skipped', slim='ok',
                          nm='skipped')
    assert 'needs CUDA' in saved['sections']['nm']['reason']
    rows = saved['sections']['slim']['figures']['latency']
    assert {(r['batch'], r['model']) for r in rows} == {
        (b, m) for b in (1, 2) for m in ('dense', 'ours -50%', 'ours -75%')}
    for row in rows:
        assert row['ms'] > 0 and row['speedup'] > 0 and row['mode'] == 'eager'
        if row['model'] == 'dense':
            assert row['speedup'] == 1.0 and row['ideal'] == 1.0
    ratios = saved['sections']['slim']['figures']['flops_ratio']
    assert 0.4 < ratios['ours -50%'] <= 0.5 and 0.15 < ratios['ours -75%'] <= 0.25
    assert saved['machine']['torch'] == torch.__version__
    assert 'slim: ok' in capsys.readouterr().out


def test_nm_path_with_a_stand_in_for_the_sparse_kernel(tmp_path, monkeypatch):
    """The 2:4 section's code on the CPU: ``to_sparse_semi_structured`` replaced by the
    identity (the "sparse" product is then the dense one), the machine check by a yes."""
    import mmrecprune.sparsity.semi_structured as semi
    monkeypatch.setattr(semi, 'semi_structured_unavailable', lambda device=None: None)
    monkeypatch.setattr(torch.sparse, 'to_sparse_semi_structured', lambda t: t)
    args = gpu_check.parse_args(['--out-dir', str(tmp_path), *TINY])
    entry = dict(checks={}, figures={}, notes=[])
    gpu_check.nm_section(entry, args, gpu_check.Deadline(300), 'cpu', torch.float32,
                         str(tmp_path))
    assert entry['checks']['outputs_match']
    assert max(entry['figures']['max_relative_difference_per_stage']) < 1e-5
    layers = entry['figures']['per_layer']
    # ResNet-18's 1x1 convs: the three downsample shortcuts, stride 2
    assert [(r['in_channels'], r['out_channels'], r['stride']) for r in layers] == [
        (64, 128, [2, 2]), (128, 256, [2, 2]), (256, 512, [2, 2])]
    assert all(r['sparse_matmul_ms'] > 0 and r['speedup_vs_conv'] > 0 for r in layers)
    assert {r['model'] for r in entry['figures']['backbone']} == {'dense (mask)', '2:4 sparse'}


def test_synthetic_fashion_mnist_reads_as_the_real_files(tmp_path):
    from mmrecprune.datasets.fashion_mnist_io import load_fashion_mnist
    root = gpu_check.write_synthetic_fashion_mnist(str(tmp_path), num_train=20, num_test=5)
    images, labels = load_fashion_mnist(root, 'train')
    assert images.shape == (20, 28, 28) and labels.shape == (20, ) and labels.max() < 10
    assert load_fashion_mnist(root, 'test')[0].shape == (5, 28, 28)


def test_focal_loss_swapped_only_without_mmcv_ops(monkeypatch):
    """With mmcv's compiled ops the CUDA focal loss stays; with gpu_check.sh's stub _ext,
    mmdet's PyTorch focal loss takes its place and computes the same as FocalLoss on the
    CPU."""
    from mmdet.models.losses import FocalLoss, focal_loss
    context, note = gpu_check.pure_pytorch_focal_loss()
    assert note is None
    monkeypatch.setitem(sys.modules, 'mmcv._ext', types.SimpleNamespace(GPU_CHECK_STUB=True))
    context, note = gpu_check.pure_pytorch_focal_loss()
    assert 'without ops' in note
    pred, target = torch.randn(7, 4), torch.tensor([0, 3, 4, 1, 4, 2, 0])
    with context:
        swapped = focal_loss.sigmoid_focal_loss(pred, target)
    assert focal_loss.sigmoid_focal_loss.__name__ == 'sigmoid_focal_loss'
    torch.testing.assert_close(swapped, FocalLoss()(pred, target))


def test_mask_and_frozen_stage_checks(r18_tickets):
    from mmrecprune.tickets import load_ticket
    ticket = load_ticket(r18_tickets['unstructured'])
    state = {f'backbone.{k}': v.clone() for k, v in ticket.state_dict.items()}
    assert gpu_check.masks_hold(state, ticket) == (True, False)  # nothing trained
    name = next(n for n in ticket.masks if n.startswith('layer2'))
    state[f'backbone.{name}'][ticket.masks[name]] += 1
    assert gpu_check.masks_hold(state, ticket) == (True, True)
    assert gpu_check.frozen_unchanged(state, ticket)
    state[f'backbone.{name}'][~ticket.masks[name]] = 1e-3  # a pruned entry came back
    assert gpu_check.masks_hold(state, ticket)[0] is False
    stage1 = next(n for n in ticket.state_dict if n.startswith('layer1') and 'conv' in n)
    state[f'backbone.{stage1}'] += 1
    assert not gpu_check.frozen_unchanged(state, ticket)


# -- the CUDA sections' runs and checks, with CPU stand-ins for AMP ----------------------------
def test_amp_and_ddp_runs_and_checks_on_the_cpu(tmp_path, monkeypatch):
    """The amp and ddp sections' tools/train.py and dist_train.sh runs and their checks, on
    the CPU: ``--amp`` and the AMP dtype left out (MMEngine refuses AMP without an
    accelerator), so the loss-scaler check is the one that fails; DDP on gloo (one process),
    so the NCCL check fails and the rest holds."""
    real = gpu_check.run_repo_tool

    def without_amp(cmd, env, log):
        cmd = [c for c in cmd if c != '--amp' and not c.startswith('optim_wrapper.dtype')]
        return real(cmd[:-1] if cmd[-1] == '--cfg-options' else cmd, env, log)

    monkeypatch.setattr(gpu_check.training_sections, 'run_repo_tool', without_amp)
    args = gpu_check.parse_args(['--out-dir', str(tmp_path), '--device', 'cpu',
                                 '--amp-dtypes', 'float16'])
    env = gpu_check.tool_env(str(tmp_path))
    entry = dict(checks={}, figures={}, notes=[])
    gpu_check.amp_section(entry, args, str(tmp_path), env)
    failed = sorted(k for k, v in entry['checks'].items() if not v)
    assert failed == ['imp_amp_loss_scaler_saved'], entry
    assert {'ticket_float16_fills_exact', 'ticket_float16_frozen_stages_unchanged',
            'ticket_float16_kept_weights_trained', 'imp_amp_pruned_entries_zero',
            'imp_amp_sparsity_0.36'} <= set(entry['checks'])
    entry = dict(checks={}, figures={}, notes=[])
    gpu_check.ddp_section(entry, args, str(tmp_path), env)
    assert entry['checks'] == {'ddp_ticket_sparsity_0.36': True, 'ddp_launcher_pytorch': True,
                               'ddp_backend_nccl': False}


def test_retinanet_steps_and_checks_on_the_cpu(tmp_path, monkeypatch):
    """The retinanet section on the CPU: mmdet's shipped RetinaNet with a filled and a 2:4
    ResNet-50 ticket, an OptimWrapper standing in for AmpOptimWrapper (which needs a GPU);
    every check holds."""
    from mmengine import optim

    class CPUStandIn(optim.OptimWrapper):
        def __init__(self, optimizer, dtype=None):
            super().__init__(optimizer)

    monkeypatch.setattr(optim, 'AmpOptimWrapper', CPUStandIn)
    monkeypatch.setattr(gpu_check.training_sections, 'RETINANET_STEPS', 1)
    args = gpu_check.parse_args(['--out-dir', str(tmp_path), '--device', 'cpu',
                                 '--amp-dtypes', 'bfloat16'])
    entry = dict(checks={}, figures={}, notes=[])
    gpu_check.retinanet_section(entry, args, str(tmp_path), 'cpu')
    assert entry['checks'] and all(entry['checks'].values()), entry['checks']
    assert {'filled_bfloat16_masks_exact', 'nm_bfloat16_masks_exact', 'nm_bfloat16_still_2to4',
            'nm_bfloat16_frozen_stages_unchanged'} <= set(entry['checks'])
