"""tools/analysis_tools/check_model_zoo.py on a real metafile: the shipped L1-uniform config
rebuilt (tools/train.py + tools/test.py, shrunk to 12 iterations on 64 images), compared with
metafile values far from and near the measurement, its ticket hashed and verified."""
import hashlib
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOOL = 'tools/analysis_tools/check_model_zoo.py'
NAME = 'l1-uniform_r18-w16_1xb128-4e_fashionmnist'
CONFIG = 'configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py'
SHRINK = ['--cfg-options', 'load_from=None', 'train_dataloader.dataset.indices=64',
          'train_dataloader.batch_size=16', 'val_dataloader.dataset.indices=32',
          'test_dataloader.dataset.indices=32', 'train_cfg.max_epochs=3']


def metafile(path, metrics, ticket=None, name=NAME):
    """An OpenMMLab metafile with one embedded-default entry for the shipped config."""
    entry = {'Name': name, 'In Collection': 'L1-norm filter pruning', 'Config': CONFIG,
             'Metadata': {'Training Data': 'Fashion-MNIST', 'FLOPs Reduction': 50.0},
             'Results': [{'Task': 'Image Classification', 'Dataset': 'Fashion-MNIST',
                          'Metrics': metrics}]}
    if ticket is not None:
        entry['Ticket'] = ticket
    path.write_text(json.dumps({'Models': [entry]}))  # JSON is YAML
    return str(path)


def check(*args):
    result = subprocess.run([sys.executable, TOOL, *args], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def table_row(out, name=NAME):
    return next(line for line in out.splitlines() if line.startswith(name + ' '))


@pytest.fixture(scope='module')
def rebuilt(tmp_path_factory):
    """One shrunk rebuild, checked against a metafile value far from any measurement; later
    checks reuse its work dir."""
    root = tmp_path_factory.mktemp('zoo')
    work = root / 'work'
    far = metafile(root / 'far.yml', {'Top 1 Accuracy': 99.9})
    code, out = check('--metafiles', far, '--work-dir', str(work), *SHRINK)
    measured = json.loads((work / NAME / 'test_metrics.json').read_text())['accuracy/top1']
    return dict(root=root, work=work, code=code, out=out, measured=measured)


def test_far_metafile_value_fails_with_the_table(rebuilt):
    assert rebuilt['code'] == 1, rebuilt['out'][-3000:]
    out = rebuilt['out']
    assert 'model' in out and 'metafile' in out and 'measured' in out and 'status' in out
    row = table_row(out)
    assert 'Top 1 Accuracy' in row and '99.90' in row and row.endswith('FAIL'), row
    assert f'{rebuilt["measured"]:.2f}' in row
    assert '0 OK, 1 FAIL, 0 ERROR' in out


def test_value_within_tolerance_passes_and_the_finished_run_is_reused(rebuilt):
    near = metafile(rebuilt['root'] / 'near.yml',
                    {'Top 1 Accuracy': round(rebuilt['measured'] + 0.4, 2)})
    code, out = check('--metafiles', near, '--work-dir', str(rebuilt['work']), *SHRINK)
    assert code == 0, out[-3000:]
    assert table_row(out).endswith('OK')
    assert 'reusing' in out and 'tools/train.py' not in out  # nothing trained again
    # a tighter tolerance turns the same 0.4 points into a failure
    code, out = check('--metafiles', near, '--work-dir', str(rebuilt['work']),
                      '--tolerance', '0.1', *SHRINK)
    assert code == 1 and table_row(out).endswith('FAIL'), out[-3000:]


def test_sha256_of_the_rebuilt_ticket_and_verify_file(rebuilt, tmp_path):
    ticket = rebuilt['work'] / NAME / 'tickets' / 'slim.pth'
    sha = hashlib.sha256(ticket.read_bytes()).hexdigest()
    unrecorded = metafile(tmp_path / 'unrecorded.yml',
                          {'Top 1 Accuracy': round(rebuilt['measured'], 2)},
                          ticket={'File': 'tickets/slim.pth'})
    code, out = check('--metafiles', unrecorded, '--work-dir', str(rebuilt['work']), '--sha256',
                      *SHRINK)
    assert code == 0, out[-3000:]
    assert f'{NAME}  tickets/slim.pth  sha256 {sha}' in out
    assert 'recorded SHA256: none' in out

    recorded = metafile(tmp_path / 'recorded.yml', {'Top 1 Accuracy': 90.0},
                        ticket={'File': 'tickets/slim.pth', 'SHA256': sha})
    code, out = check('--metafiles', recorded, '--verify-file', str(ticket), '--model', NAME)
    assert code == 0 and f'OK: {ticket} is the ticket {NAME} records' in out, out
    wrong = tmp_path / 'slim.pth'
    data = bytearray(ticket.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    wrong.write_bytes(bytes(data))
    code, out = check('--metafiles', recorded, '--verify-file', str(wrong), '--model', NAME)
    assert code == 1, out
    assert f'MISMATCH: {wrong} has sha256' in out and f'records {sha}' in out
    assert 'this is not that file' in out
    # an entry that records no sha256 cannot verify anything
    code, out = check('--metafiles', unrecorded, '--verify-file', str(ticket), '--model', NAME)
    assert code == 2 and 'records no ticket sha256' in out, out


def test_unknown_metric_name_is_refused_before_anything_runs(tmp_path):
    path = metafile(tmp_path / 'metafile.yml', {'Top-1 Acc': 91.0})
    code, out = check('--metafiles', path, '--work-dir', str(tmp_path / 'work'), *SHRINK)
    assert code == 2, out
    assert f"model {NAME}: unknown metric 'Top-1 Acc'" in out and "'Top 1 Accuracy'" in out
    assert not (tmp_path / 'work' / NAME).exists()


def test_missing_metafile_is_a_clear_error(tmp_path):
    code, out = check('--metafiles', str(tmp_path / 'nowhere.yml'))
    assert code == 2 and f'metafile not found: {tmp_path / "nowhere.yml"}' in out, out


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    path = metafile(tmp_path / 'metafile.yml', {'Top 1 Accuracy': 91.49})
    code, out = check('--metafiles', path, '--work-dir', str(tmp_path / 'work'), '--dry-run',
                      *SHRINK)
    assert code == 0, out
    assert f'tools/train.py {CONFIG} --work-dir {tmp_path / "work" / NAME} --cfg-options ' \
           'load_from=None' in out
    assert f'tools/test.py {CONFIG} {tmp_path / "work" / NAME / "epoch_3.pth"}' in out
    assert not (tmp_path / 'work' / NAME).exists()
