"""Rebuilding the embedded-default model-zoo entries and checking them against their
metafiles (``tools/analysis_tools/check_model_zoo.py``): reading ``configs/*/metafile.yml``,
planning and running the ordinary ``tools/train.py`` / ``tools/test.py`` commands, comparing
the measured metrics, and the tickets' recorded sha256."""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import shlex
import subprocess
import sys

import yaml
from mmengine.config import Config, DictAction

from mmrecprune import cli

from .stage_runner import ROOT

EMBEDDED_DATA = 'Fashion-MNIST'
# metafile metric name -> (key in tools/test.py's metrics json, factor to the metafile's unit)
METRICS = {
    'Top 1 Accuracy': ('accuracy/top1', 1.0),  # mmrecprune.Accuracy, in percent
    'Top 5 Accuracy': ('accuracy/top5', 1.0),
    'Rotation Top 1 Accuracy': ('rotation/top1', 1.0),  # mmrecprune.RotationAccuracy
    'box AP': ('coco/bbox_mAP', 100.0),  # mmdet's CocoMetric reports a fraction
    'mask AP': ('coco/segm_mAP', 100.0),
    'mIoU': ('mIoU', 1.0),  # mmseg's IoUMetric, in percent
}
METRICS_FILE = 'test_metrics.json'
COMMANDS_FILE = 'rebuild_commands.json'


class ZooError(cli.CLIError):
    """A metafile or an argument this tool cannot work with (exit status 2, one line)."""


# -- metafiles --------------------------------------------------------------------------------
def load_entries(paths):
    """``[(metafile, entry)]`` for every model of every metafile in ``paths``."""
    entries = []
    for path in paths:
        if not osp.isfile(path):
            raise ZooError(f'metafile not found: {path}')
        with open(path) as f:
            try:
                content = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise ZooError(f'{path} is not valid YAML: {err}') from None
            except UnicodeDecodeError:
                raise ZooError(f'{path} is not a metafile (binary data, not YAML text)') \
                    from None
        models = content.get('Models') if isinstance(content, dict) else None
        if not isinstance(models, list):
            raise ZooError(f'{path} has no `Models:` list (the OpenMMLab metafile layout)')
        for entry in models:
            if not isinstance(entry, dict) or 'Name' not in entry:
                raise ZooError(f'{path}: a model entry without `Name`: {entry!r}')
            entries.append((path, entry))
    return entries


def is_embedded(entry):
    return str(entry.get('Metadata', {}).get('Training Data', '')).startswith(EMBEDDED_DATA)


def find(entries, name):
    for path, entry in entries:
        if entry['Name'] == name:
            return path, entry
    raise ZooError(f'no model {name!r} in the metafiles read; known: '
                   f'{sorted(e["Name"] for _, e in entries)}')


def expected_metrics(path, entry):
    """``[(metafile metric name, metafile value)]`` of an entry; unknown names are refused."""
    out = []
    for result in entry.get('Results') or []:
        if not isinstance(result, dict) or not isinstance(result.get('Metrics'), dict):
            raise ZooError(f'{path}: model {entry["Name"]}: every Results item needs a '
                           f'`Metrics:` mapping, got {result!r}')
        for name, value in result['Metrics'].items():
            if name not in METRICS:
                raise ZooError(f'{path}: model {entry["Name"]}: unknown metric {name!r}; this '
                               f'tool knows {sorted(METRICS)} (see METRICS in '
                               'mmrecprune/benchmarks/model_zoo.py)')
            try:
                out.append((name, float(value)))
            except (TypeError, ValueError):
                raise ZooError(f'{path}: model {entry["Name"]}: {name} is {value!r}, not a '
                               'number') from None
    return out


def select(entries, names):
    """The ``(metafile, entry)`` pairs to check: ``names``, or every embedded-default entry
    with Results."""
    if names:
        chosen = [find(entries, n) for n in names]
        for path, entry in chosen:
            if not is_embedded(entry):
                data = entry.get('Metadata', {}).get('Training Data')
                raise ZooError(f'{entry["Name"]} ({path}) trains on {data}: only the '
                               f'embedded-default entries (Training Data: {EMBEDDED_DATA}) '
                               'are rebuilt here')
            if not entry.get('Results'):
                raise ZooError(f'{entry["Name"]} ({path}) has no Results: nothing to compare')
    else:
        chosen = [(p, e) for p, e in entries if is_embedded(e) and e.get('Results')]
        if not chosen:
            raise ZooError('no embedded-default entry (Training Data: Fashion-MNIST) with '
                           'Results in the metafiles read')
    for path, entry in chosen:
        if not osp.isfile(osp.join(ROOT, str(entry.get('Config', '')))):
            raise ZooError(f'{path}: model {entry["Name"]}: Config {entry.get("Config")!r} '
                           'does not exist')
        expected_metrics(path, entry)
        recorded_ticket(path, entry)
    return chosen


# -- runs -------------------------------------------------------------------------------------
def parse_cfg_options(options):
    """``--cfg-options`` strings as tools/train.py reads them (MMEngine's DictAction)."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction, default={})
    return parser.parse_args(['--o', *options]).o if options else {}


def load_config(config, options=()):
    cfg = Config.fromfile(osp.join(ROOT, config), import_custom_modules=False)
    cfg.merge_from_dict(parse_cfg_options(options))
    return cfg


def final_checkpoint(cfg):
    """The checkpoint MMEngine's CheckpointHook writes last (``save_last``)."""
    train_cfg = cfg.train_cfg
    if 'max_epochs' in train_cfg:
        return f'epoch_{train_cfg.max_epochs}.pth'
    return f'iter_{train_cfg.max_iters}.pth'


def config_making(path):
    """The shipped config whose default work dir ``path`` lies in, or None."""
    parts = osp.normpath(osp.relpath(osp.abspath(osp.join(ROOT, path)), ROOT)).split(os.sep)
    if len(parts) < 3 or parts[0] != 'work_dirs':
        return None
    found = [p for p in glob.glob(osp.join(ROOT, 'configs', '**', f'{parts[1]}.py'),
                                  recursive=True) if '_base_' not in p]
    return osp.relpath(found[0], ROOT) if len(found) == 1 else None


def prerequisites(cfg, owner, seen=None):
    """``[(name, command, output)]`` that make ``cfg``'s missing ``load_from``, first ones
    first."""
    seen = set() if seen is None else seen
    load_from = cfg.get('load_from')
    if not load_from or osp.exists(osp.join(ROOT, load_from)) or load_from in seen:
        return []
    seen.add(load_from)
    config = config_making(load_from)
    if config is None:
        raise ZooError(f'{owner}: load_from={load_from} does not exist and no config in '
                       'configs/ makes it; give the file (or --cfg-options load_from=...)')
    cfg = load_config(config)
    if final_checkpoint(cfg) != osp.basename(load_from):
        raise ZooError(f'{owner}: load_from={load_from} does not exist; {config} would write '
                       f'{final_checkpoint(cfg)} in that folder, not {osp.basename(load_from)}')
    before = prerequisites(cfg, config, seen)
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir',
           osp.dirname(osp.join(ROOT, load_from))]
    return before + [(osp.splitext(osp.basename(config))[0], cmd, osp.join(ROOT, load_from))]


def plan(entry, work_root, options):
    """What rebuilding ``entry`` runs: its prerequisites, then train and test."""
    cfg = load_config(entry['Config'], options)
    work_dir = osp.join(work_root, entry['Name'])
    extra = ['--cfg-options', *options] if options else []
    train = [sys.executable, 'tools/train.py', entry['Config'], '--work-dir', work_dir, *extra]
    test = [sys.executable, 'tools/test.py', entry['Config'],
            osp.join(work_dir, final_checkpoint(cfg)), '--work-dir', work_dir,
            '--out-json', osp.join(work_dir, METRICS_FILE), *extra]
    return dict(name=entry['Name'], work_dir=work_dir, commands=[train, test],
                before=prerequisites(cfg, entry['Name']))


def finished(run):
    """Whether ``run``'s work dir holds test metrics made by the same commands."""
    if not osp.isfile(osp.join(run['work_dir'], METRICS_FILE)):
        return False
    record = osp.join(run['work_dir'], COMMANDS_FILE)
    if not osp.isfile(record):
        return True  # made by hand: its metrics are taken as they are
    with open(record) as f:
        recorded = json.load(f)
    return [renamed_options(c) for c in recorded] == [shlex.join(c) for c in run['commands']]


def renamed_options(command):
    """A recorded command as it is written now: tools/test.py's metrics file was ``--out``
    before ``--out`` took MMDetection's meaning (the predictions pickle), so a work dir rebuilt
    then still counts as made by the same commands."""
    if ' tools/test.py ' in f' {command} ' and ' --out ' in command:
        return command.replace(' --out ', ' --out-json ')
    return command


def show(name, cmd):
    print(f'[{name}] $ {shlex.join(cmd)}', flush=True)


def execute(run, force):
    """Run what ``run`` needs; return the measured metrics, or raise CalledProcessError."""
    for name, cmd, output in run['before']:
        if not osp.exists(output):
            show(name, cmd)
            subprocess.run(cmd, cwd=ROOT, check=True)
    metrics = osp.join(run['work_dir'], METRICS_FILE)
    if force or not finished(run):
        if osp.exists(metrics):
            os.remove(metrics)
        for cmd in run['commands']:
            show(run['name'], cmd)
            subprocess.run(cmd, cwd=ROOT, check=True)
        with open(osp.join(run['work_dir'], COMMANDS_FILE), 'w') as f:
            json.dump([shlex.join(c) for c in run['commands']], f, indent=2)
    else:
        print(f'[{run["name"]}] reusing {metrics} (--force rebuilds)', flush=True)
    with open(metrics) as f:
        return json.load(f)


def compare(path, entry, measured, tolerance):
    """Table rows ``(model, metric, metafile, measured, diff, status)``."""
    rows = []
    for name, value in expected_metrics(path, entry):
        key, factor = METRICS[name]
        if key not in measured:
            rows.append((entry['Name'], name, value, None, None,
                         f'ERROR: no {key!r} in the test metrics ({sorted(measured)})'))
            continue
        got = float(measured[key]) * factor
        rows.append((entry['Name'], name, value, got, got - value,
                     'OK' if abs(got - value) <= tolerance else 'FAIL'))
    return rows


def print_table(rows, tolerance):
    width = max([len('model')] + [len(r[0]) for r in rows])
    metric_width = max([len('metric')] + [len(r[1]) for r in rows])
    print(f'\n{"model":<{width}}  {"metric":<{metric_width}}  {"metafile":>8}  '
          f'{"measured":>8}  {"diff":>6}  status')

    def num(x, fmt):
        return format(x, fmt) if x is not None else '-'

    for model, metric, value, got, diff, status in rows:
        print(f'{model:<{width}}  {metric:<{metric_width}}  {num(value, "8.2f")}  '
              f'{num(got, "8.2f"):>8}  {num(diff, "+6.2f"):>6}  {status}')
    counts = {s: sum(r[5].split(':')[0] == s for r in rows) for s in ('OK', 'FAIL', 'ERROR')}
    print(f'{counts["OK"]} OK, {counts["FAIL"]} FAIL, {counts["ERROR"]} ERROR '
          f'(tolerance {tolerance:.2f} points, absolute)')


# -- tickets ----------------------------------------------------------------------------------
def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def recorded_ticket(path, entry):
    """``(file, sha256 or None)`` the entry records, or ``(None, None)``."""
    ticket = entry.get('Ticket') or {}
    if not isinstance(ticket, dict):
        raise ZooError(f'{path}: model {entry["Name"]}: `Ticket` must be a mapping with File '
                       f'and SHA256, got {ticket!r}')
    sha = ticket.get('SHA256')
    if sha is not None:
        sha = str(sha).lower()
        if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
            raise ZooError(f'{path}: model {entry["Name"]}: Ticket.SHA256 {ticket["SHA256"]!r} '
                           'is not a sha256 (64 hex digits)')
    return ticket.get('File'), sha


def print_ticket_hashes(path, entry, work_dir):
    named, recorded = recorded_ticket(path, entry)
    files = sorted(glob.glob(osp.join(work_dir, 'tickets', '*.pth')))
    if not files:
        print(f'{entry["Name"]}: no ticket in {osp.join(work_dir, "tickets")}')
    for file in files:
        rel = osp.relpath(file, work_dir)
        note = ''
        if rel == named:
            note = ('  <- the metafile\'s Ticket.File; recorded SHA256: ' +
                    ('none' if recorded is None else
                     'the same' if recorded == sha256_of(file) else 'another file'))
        print(f'{entry["Name"]}  {rel}  sha256 {sha256_of(file)}{note}')


def verify_file(entries, file, name):
    """Exit status 0 when ``file`` is the ticket entry ``name`` records, else 1."""
    path, entry = find(entries, name)
    named, recorded = recorded_ticket(path, entry)
    if recorded is None:
        raise ZooError(f'{name} ({path}) records no ticket sha256 (Ticket.SHA256); a published '
                       'ticket gets it from `check_model_zoo.py --models NAME --sha256`')
    if not osp.isfile(file):
        raise ZooError(f'--verify-file: no such file: {file}')
    actual = sha256_of(file)
    if actual == recorded:
        print(f'OK: {file} is the ticket {name} records ({named}, sha256 {actual})')
        return 0
    print(f'MISMATCH: {file} has sha256 {actual}, but {name} records {recorded} for {named} '
          f'in {path}: this is not that file (corrupted, truncated, re-saved or from another '
          'run); do not use it as that model\'s ticket')
    return 1
