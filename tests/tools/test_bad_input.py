"""Every tool in tools/: bad input gets one line, not a traceback, and nothing is overwritten.

Each tool runs as a subprocess, as a user runs it, with (a) a missing file, (b) a file of the
wrong kind (text where a checkpoint is expected, a ticket or a checkpoint where a config is,
a config where a ticket is, a file where a folder is) and (c) an existing output file where
the tool writes one. Every run must exit with status 2, print no traceback and exactly one
line on stderr, ``<tool>: error: <message>``, that names the file; the existing output stays
byte for byte as it was, and an output that did not exist is not created.

The tools are found by globbing ``tools/**/*.py``: a new tool fails
``test_every_tool_has_bad_input_cases`` until it gets cases in ``CASES`` (or, if it takes no
file at all, an entry in ``NO_FILES``). The processes run two at a time, forked from one that
has imported mmrecprune (:mod:`mmrecprune.testing.tool_server`): a fresh interpreter spends
~3.5 s on imports before a tool reads its first argument.
"""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, tiny_cls_cfg

#: modules in tools/ that are no command-line entry points (no ``__main__`` block)
NOT_ENTRY_POINTS = {}
#: entry points that read and write no file a user names (synthetic models only)
NO_FILES = {
    'tools/benchmarks/bench_global_prune.py': 'times a random ResNet; prints only',
    'tools/benchmarks/bench_training_overhead.py': 'times shipped configs; prints only',
}

#: placeholders in the arguments below (made per case in ``_prepare``):
#: {missing} {missing_py} {missing_dir}: nothing there; {text}: a text file, {text_pth}: the
#: same named .pth; {config}: a tiny classifier config, {ckpt}: a checkpoint of it (a real
#: training run), {ticket_u} / {ticket_s}: unstructured / structured ResNet-18 tickets;
#: {out}: an existing file the case must leave as it is ({out_pkl}: the same named .pkl);
#: {new} {new_pkl} {new_json}: output paths (.pth, .pkl, .json) that must not appear;
#: {wd}: a fresh work dir; {bad_wd}: a work dir whose results.json is no JSON;
#: {other_scenes}: a scenes data set made with other parameters.
SMALL_SCENES = ['--num-train', '2', '--num-test', '1', '--canvas-size', '64']
TINY_TIMING = ['--depth', '18', '--input-size', '32', '--batch-sizes', '1', '--repeats', '1',
               '--warmup', '0', '--modes', 'eager', '--no-torch-pruning']
# (case id, arguments, the placeholder whose path the message must name)
CASES = {
    'tools/train.py': [
        ('missing_config', ['{missing_py}', '--work-dir', '{wd}'], 'missing_py'),
        ('ticket_as_config', ['{ticket_s}', '--work-dir', '{wd}'], 'ticket_s'),
        ('text_as_resume', ['{config}', '--resume', '{text_pth}', '--work-dir', '{wd}'],
         'text_pth'),
    ],
    'tools/test.py': [
        ('missing_checkpoint', ['{config}', '{missing}', '--work-dir', '{wd}', '--out',
                                '{new_pkl}'], 'missing'),
        ('text_as_checkpoint', ['{config}', '{text_pth}', '--work-dir', '{wd}', '--out',
                                '{new_pkl}', '--out-json', '{new_json}'], 'text_pth'),
        ('existing_out', ['{config}', '{ckpt}', '--work-dir', '{wd}', '--out', '{out_pkl}'],
         'out_pkl'),
        ('existing_out_json', ['{config}', '{ckpt}', '--work-dir', '{wd}', '--out-json',
                               '{out}'], 'out'),
        # --out is the predictions pickle (MMDetection's meaning): the metrics file it was
        # before is refused with a pointer to --out-json
        ('json_as_out', ['{config}', '{ckpt}', '--work-dir', '{wd}', '--out', '{new_json}'],
         'new_json'),
        ('no_visualization_hook', ['{config}', '{ckpt}', '--work-dir', '{wd}', '--out',
                                   '{new_pkl}', '--show-dir', 'vis'], 'config'),
    ],
    'tools/prune_on_the_fly.py': [
        ('missing_config', ['{missing_py}', '{ckpt}', '--sparsity', '0.5', '--out', '{new}',
                            '--work-dir', '{wd}'], 'missing_py'),
        ('text_as_checkpoint', ['{config}', '{text_pth}', '--sparsity', '0.5', '--out', '{new}',
                                '--work-dir', '{wd}'], 'text_pth'),
        ('existing_out', ['{config}', '{ckpt}', '--sparsity', '0.5', '--out', '{out}',
                          '--work-dir', '{wd}'], 'out'),
    ],
    'tools/prune_post_training.py': [
        ('missing_checkpoint', ['{config}', '{missing}', '--out', '{new}', '--work-dir', '{wd}'],
         'missing'),
        ('ticket_as_config', ['{ticket_s}', '{ckpt}', '--out', '{new}', '--work-dir', '{wd}'],
         'ticket_s'),
        ('existing_out', ['{config}', '{ckpt}', '--out', '{out}', '--work-dir', '{wd}'], 'out'),
    ],
    'tools/benchmarks/bench_post_training.py': [  # writes into its work dir only
        ('text_as_checkpoint', ['--config', '{config}', '--checkpoint', '{text_pth}',
                                '--work-dir', '{wd}'], 'text_pth'),
        ('file_as_work_dir', ['--config', '{config}', '--checkpoint', '{ckpt}',
                              '--work-dir', '{out}'], 'out'),
    ],
    'tools/run_embedded_default.py': [  # reads no file a user names: its work dir only
        ('file_as_work_dir', ['--work-dir', '{out}'], 'out'),
        ('corrupt_results', ['--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/analysis_tools/analyze_ticket.py': [
        ('missing_ticket', ['{missing}', '--out', '{new}'], 'missing'),
        ('text_as_ticket', ['{text_pth}', '--out', '{new}'], 'text_pth'),
        ('cfg_options_of_ticket', ['{ticket_s}', '--cfg-options', 'model.backbone.depth=50',
                                   '--out', '{new}'], 'ticket_s'),
        ('existing_out', ['{ticket_s}', '--out', '{out}', '--input-size', '32', '--batch-sizes',
                          '1', '--repeats', '1', '--warmup', '0'], 'out'),
    ],
    'tools/analysis_tools/check_model_zoo.py': [  # writes into its work dir only
        ('missing_metafile', ['--metafiles', '{missing}', '--work-dir', '{wd}'], 'missing'),
        ('text_as_metafile', ['--metafiles', '{text}', '--work-dir', '{wd}'], 'text'),
        ('checkpoint_as_metafile', ['--metafiles', '{ckpt}', '--work-dir', '{wd}'], 'ckpt'),
    ],
    'tools/analysis_tools/compare_tickets.py': [
        ('missing_ticket', ['{missing}', '{ticket_u}', '--out', '{new}'], 'missing'),
        ('config_as_ticket', ['{ticket_u}', '{config}', '--out', '{new}'], 'config'),
        ('existing_out', ['{ticket_u}', '{ticket_u}', '--out', '{out}'], 'out'),
    ],
    'tools/analysis_tools/recalibrate_bn.py': [
        ('missing_checkpoint', ['{config}', '{missing}', '--out', '{new}', '--work-dir', '{wd}'],
         'missing'),
        ('ticket_as_config', ['{ticket_s}', '{ckpt}', '--out', '{new}', '--work-dir', '{wd}'],
         'ticket_s'),
        ('existing_out', ['{config}', '{ckpt}', '--images', '16', '--out', '{out}',
                          '--work-dir', '{wd}'], 'out'),
    ],
    'tools/analysis_tools/tickets_unchanged.py': [  # run: into its work dir; compare: prints
        ('missing_pretrained', ['run', '--work-dir', '{wd}', '--pretrained', '{missing}',
                                '--decoder', '{ckpt}'], 'missing'),
        ('text_as_decoder', ['run', '--work-dir', '{wd}', '--pretrained', '{ckpt}',
                             '--decoder', '{text_pth}'], 'text_pth'),
        ('missing_work_dirs', ['compare', '{missing_dir}', '{missing_dir}'], 'missing_dir'),
    ],
    'tools/deployment/pytorch2onnx.py': [
        ('missing_config', ['{missing_py}', '--out', '{new}'], 'missing_py'),
        ('config_as_ticket', ['--ticket', '{config}', '--out', '{new}'], 'config'),
        ('cfg_options_of_ticket', ['--ticket', '{ticket_s}', '--cfg-options', 'a=1', '--out',
                                   '{new}'], 'ticket_s'),
        ('existing_out', ['--ticket', '{ticket_s}', '--shape', '1', '3', '32', '32', '--out',
                          '{out}'], 'out'),
    ],
    'tools/model_converters/starting_weights.py': [
        ('missing_src', ['{missing}', '{new}', '--config', '{config}'], 'missing'),
        ('text_as_src', ['{text_pth}', '{new}', '--config', '{config}'], 'text_pth'),
        ('existing_dst', ['{ckpt}', '{out}', '--config', '{config}'], 'out'),
    ],
    'tools/dataset_converters/make_fashion_scenes.py': [
        ('missing_fashion_root', ['--fashion-root', '{missing_dir}', '--out-dir', '{new}',
                                  *SMALL_SCENES], 'missing_dir'),
        ('file_as_out_dir', ['--out-dir', '{out}', *SMALL_SCENES], 'out'),
        ('other_data_set', ['--out-dir', '{other_scenes}', *SMALL_SCENES], 'other_scenes'),
    ],
    # the GPU check writes gpu_check.json / .png into --out-dir (its CPU-side refusals)
    'tools/benchmarks/gpu_check.py': [
        ('file_as_out_dir', ['--out-dir', '{out}', '--device', 'cpu'], 'out'),
        ('out_dir_under_a_file', ['--out-dir', '{out}/gpu', '--device', 'cpu'], 'out'),
    ],
    # the benchmarks write into their work dirs; a missing --pretrained is trained first
    'tools/benchmarks/bench_slim_speed.py': [
        ('file_as_work_dir', ['--work-dir', '{out}', *TINY_TIMING], 'out'),
    ],
    'tools/benchmarks/bench_slim_training.py': [  # its models are built from shipped configs
        ('existing_out', ['--models', 'r18', '--methods', 'l1', '--out', '{out}'], 'out'),
    ],
    'tools/benchmarks/bench_mask_divergence.py': [
        ('text_as_pretrained', ['--pretrained', '{text_pth}', '--work-dir', '{wd}'], 'text_pth'),
        ('corrupt_results', ['--pretrained', '{ckpt}', '--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/benchmarks/fuzz_loaders.py': [  # makes its own sources in its work dir
        ('file_as_work_dir', ['--work-dir', '{out}', '--cases', '1'], 'out'),
    ],
    'tools/benchmarks/bench_onthefly.py': [
        ('file_as_work_dir', ['--work-dir', '{out}'], 'out'),
        ('corrupt_results', ['--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/benchmarks/bench_probe_stability.py': [
        ('missing_backbone', ['--backbone', 'dense={missing}', '--work-dir', '{wd}'], 'missing'),
        ('text_as_backbone', ['--backbone', 'dense={text_pth}', '--work-dir', '{wd}'],
         'text_pth'),
    ],
    'tools/benchmarks/bench_psap_quality.py': [
        ('text_as_pretrained', ['--pretrained', '{text_pth}', '--work-dir', '{wd}'], 'text_pth'),
        ('text_as_dense_results', ['--pretrained', '{ckpt}', '--dense-results', '{text}',
                                   '--work-dir', '{wd}'], 'text'),
    ],
    'tools/benchmarks/bench_recprune_vs_imp.py': [
        ('text_as_pretrained', ['--pretrained', '{text_pth}', '--work-dir', '{wd}'], 'text_pth'),
        ('corrupt_results', ['--pretrained', '{ckpt}', '--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/benchmarks/bench_selfsup.py': [
        ('file_as_work_dir', ['--work-dir', '{out}'], 'out'),
        ('corrupt_results', ['--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/benchmarks/leaderboard.py': [
        ('text_as_pretrained', ['--pretrained', '{text_pth}', '--work-dir', '{wd}'], 'text_pth'),
        ('file_as_selfsup_dir', ['--pretrained', '{ckpt}', '--selfsup-dir', '{out}',
                                 '--work-dir', '{wd}'], 'out'),
        ('corrupt_results', ['--pretrained', '{ckpt}', '--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
    'tools/benchmarks/bench_routes.py': [
        ('text_as_pretrained', ['--pretrained', '{text_pth}', '--work-dir', '{wd}'], 'text_pth'),
        ('file_as_work_dir', ['--pretrained', '{ckpt}', '--work-dir', '{out}'], 'out'),
        ('corrupt_results', ['--pretrained', '{ckpt}', '--work-dir', '{bad_wd}'], 'bad_wd'),
    ],
}
#: the output paths that must not appear, by placeholder
NEW_OUTPUTS = (('new', 'pth'), ('new_pkl', 'pkl'), ('new_json', 'json'))
CASE_IDS = [f'{tool}::{name}' for tool, cases in CASES.items() for name, _, _ in cases]
TIMEOUT = 240  # a tool that does not refuse may start real work: stopped here


def _tools():
    return sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'tools', '**', '*.py'),
                                                          recursive=True))


def test_every_tool_has_bad_input_cases():
    missing = [t for t in _tools() if t not in CASES and t not in NO_FILES
               and t not in NOT_ENTRY_POINTS]
    assert not missing, (f'{missing}: give these tools bad-input cases in CASES of '
                         f'{osp.relpath(__file__, REPO)} (or list them in NO_FILES / '
                         'NOT_ENTRY_POINTS with the reason)')
    gone = sorted((set(CASES) | set(NO_FILES) | set(NOT_ENTRY_POINTS)) - set(_tools()))
    assert not gone, f'{gone} are listed here but no longer in tools/'


def _source(tool):
    with open(osp.join(REPO, tool)) as f:
        return f.read()


@pytest.mark.parametrize('tool', sorted(NOT_ENTRY_POINTS))
def test_skipped_modules_are_no_entry_points(tool):
    assert "__name__ == '__main__'" not in _source(tool), f'{tool} is a CLI now: give it cases'


@pytest.mark.parametrize('tool', [t for t in _tools() if t not in NOT_ENTRY_POINTS])
def test_every_entry_point_uses_the_shared_error_path(tool):
    main_block = _source(tool).split("if __name__ == '__main__':", 1)[-1]
    assert 'run_tool(' in main_block, f'{tool}: end with `run_tool(main)` (mmrecprune.cli)'


@pytest.mark.parametrize('tool', sorted(NO_FILES))
def test_tools_listed_without_files_take_none(tool):
    options = re.findall(r"add_argument\('([^']+)'", _source(tool))
    filey = [o for o in options if re.search(r'out|dir|file|config|checkpoint|ticket|pretrained|'
                                             r'root|path|src|dst', o)]
    assert options and not filey, f'{tool} takes {filey} now: give it cases in CASES'


# -- the runs -----------------------------------------------------------------------------------
def _write(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _prepare(case_id, args, shared, folder):
    """The case's argument list, the files it must keep as they are and those it must not
    create, with the placeholders filled in."""
    paths = dict(shared, wd=osp.join(folder, 'work'),
                 **{key: osp.join(folder, f'new_output.{ext}') for key, ext in NEW_OUTPUTS})
    keep = {}
    text = ' '.join(args)
    for key, ext in (('out', 'pth'), ('out_pkl', 'pkl')):
        if f'{{{key}}}' in text:
            paths[key] = _write(osp.join(folder, f'existing_output.{ext}'),
                                f'an earlier output of {case_id}\n'.encode())
    if '{bad_wd}' in text:
        paths['bad_wd'] = osp.join(folder, 'bad_work')
        _write(osp.join(paths['bad_wd'], 'results.json'), b'no JSON: an editor backup?\n')
    if '{other_scenes}' in text:
        paths['other_scenes'] = osp.join(folder, 'scenes')
        _write(osp.join(paths['other_scenes'], 'meta.json'), b'{"seed": 123}\n')
        _write(osp.join(paths['other_scenes'], 'annotations', 'instances_test.json'), b'{}')
    for root, _, files in os.walk(folder):
        for name in files:
            keep[osp.join(root, name)] = open(osp.join(root, name), 'rb').read()
    filled = [re.sub(r'\{(\w+)\}', lambda m: paths[m.group(1)], a) for a in args]
    return filled, paths, keep


def _run_all(jobs, folder):
    """Each job ``{case id: (tool, argv)}`` run as ``python TOOL ARGV`` in a process of its own,
    two at a time, forked from one that has imported mmrecprune (``tool_server``; the fresh
    interpreter's imports are checked by every tool's ``--help`` run in test_docs). Returns
    ``{case id: (returncode, stdout, stderr)}``."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    lines, files = [], {}
    for index, (case_id, (tool, argv)) in enumerate(jobs.items()):
        files[case_id] = (osp.join(folder, f'{index}.out'), osp.join(folder, f'{index}.err'))
        lines.append(json.dumps(dict(id=case_id, tool=tool, argv=argv, stdout=files[case_id][0],
                                     stderr=files[case_id][1])))
    server = subprocess.run(
        [sys.executable, '-m', 'mmrecprune.testing.tool_server', '--jobs', '2', '--timeout',
         str(TIMEOUT)], input='\n'.join(lines) + '\n', cwd=REPO, env=env, text=True,
        capture_output=True, timeout=TIMEOUT * len(jobs))
    assert server.returncode == 0, server.stderr[-3000:]
    codes = {r['id']: r['returncode'] for r in map(json.loads, server.stdout.splitlines())}
    results = {}
    for case_id, (out_file, err_file) in files.items():
        out, err = (open(f).read() for f in (out_file, err_file))
        if codes[case_id] == -signal.SIGKILL:
            err += f'\n[test] killed after {TIMEOUT} s: the tool did not refuse the input'
        results[case_id] = (codes[case_id], out, err)
    return results


@pytest.fixture(scope='module')
def shared_inputs(request, tmp_path_factory):
    """The input files the cases point at (fixtures only built when a selected case needs
    them)."""
    root = tmp_path_factory.mktemp('bad_input')
    wanted = {item.callspec.params['case'] for item in request.session.items
              if getattr(item, 'originalname', None) == 'test_bad_input_gets_one_line'}
    used = ' '.join(a for tool, cases in CASES.items() for name, args, _ in cases
                    if f'{tool}::{name}' in wanted for a in args)
    paths = dict(missing=str(root / 'missing.pth'), missing_py=str(root / 'missing_config.py'),
                 missing_dir=str(root / 'no_such_folder'))
    paths['text'] = _write(str(root / 'notes.txt'), b'some notes, not a checkpoint\n')
    paths['text_pth'] = _write(str(root / 'notes.pth'), b'some notes, not a checkpoint\n')
    if '{config}' in used:
        paths['config'] = str(root / 'tiny_config.py')
        # the config the training_checkpoint fixture trains (ResNet-18 at width 8)
        tiny_cls_cfg(root / 'cfg_work', max_epochs=1, train_size=32).dump(paths['config'])
    if '{ckpt}' in used:
        paths['ckpt'] = request.getfixturevalue('training_checkpoint')
    if '{ticket_u}' in used or '{ticket_s}' in used:
        tickets = request.getfixturevalue('r18_tickets')
        paths.update(ticket_u=tickets['unstructured'], ticket_s=tickets['structured'])
    return root, wanted, paths


@pytest.fixture(scope='module')
def runs(shared_inputs):
    """Every selected case run, two at a time: ``{case id: (argv, paths, kept, result)}``."""
    root, wanted, paths = shared_inputs
    shared_before = {p: open(p, 'rb').read() for p in paths.values() if osp.isfile(p)}
    jobs = {}
    for tool, cases in CASES.items():
        for name, args, _ in cases:
            case_id = f'{tool}::{name}'
            if case_id in wanted:
                folder = str(root / re.sub(r'\W', '_', case_id))
                os.makedirs(folder)
                jobs[case_id] = _prepare(case_id, args, paths, folder)
    outputs = _run_all({cid: (cid.split('::')[0], argv) for cid, (argv, _, _) in jobs.items()},
                       str(root))
    results = {cid: (*jobs[cid], outputs[cid]) for cid in jobs}
    for path, data in shared_before.items():  # no case touched the shared inputs either
        assert open(path, 'rb').read() == data, f'{path} was changed'
    return results


@pytest.mark.parametrize('case', CASE_IDS)
def test_bad_input_gets_one_line(case, runs):
    tool, name = case.split('::')
    named = next(n for cid, _, n in CASES[tool] if cid == name)
    argv, paths, kept, (code, out, err) = runs[case]
    shown = f'$ {tool} {" ".join(argv)}\nexit {code}\n--- stdout\n{out[-2000:]}\n--- stderr\n' \
            f'{err[-3000:]}'
    assert 'Traceback' not in err, shown
    assert code == 2, shown
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{osp.basename(tool)}: error: '), shown
    assert paths[named] in lines[0], f'the message does not name {paths[named]}\n{shown}'
    for path, data in kept.items():
        assert open(path, 'rb').read() == data, f'{path} was overwritten\n{shown}'
    for key, _ in NEW_OUTPUTS:
        assert not osp.exists(paths[key]), f'{paths[key]} was written\n{shown}'


# -- the shared error path itself ---------------------------------------------------------------
def test_run_tool_prints_one_line_for_bad_input_and_keeps_tracebacks_of_bugs(capsys, tmp_path):
    from mmrecprune.cli import CLIError, check_output_path, run_tool
    from mmrecprune.ticket_schema import TicketError

    def refuse(error):
        raise error

    for error in (CLIError('x.pth: no such file'), FileNotFoundError(2, 'No such file', 'x.pth'),
                  TicketError('x.pth: not a\nticket'), ValueError('bad --sparsity')):
        with pytest.raises(SystemExit) as exit_:
            run_tool(refuse, error)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and ': error: ' in err, err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_tool(lambda: 1 / 0)
    with pytest.raises(KeyError):
        run_tool(refuse, KeyError('state_dict'))
    assert run_tool(lambda a, b=0: a + b, 1, b=2) == 3
    existing = tmp_path / 'out.json'
    existing.write_text('{}')
    with pytest.raises(CLIError, match='exists; pass --force'):
        check_output_path(str(existing), False, '--out')
    assert check_output_path(str(existing), True, '--out') == str(existing)
    with pytest.raises(CLIError, match='is a directory'):
        check_output_path(str(tmp_path), True, '--out')


# -- a torchvision-format state dict given straight to prune_on_the_fly.py -----------------------
def _tiny_classifier(tmp_path):
    from mmengine.registry import init_default_scope

    from mmrecprune.registry import MODELS
    cfg = tiny_cls_cfg(tmp_path, max_epochs=1, train_size=32)
    init_default_scope(cfg.get('default_scope', 'mmrecprune'))
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def _torchvision_format(state):
    """The keys torchvision's ResNet uses: no ``backbone.`` prefix, the classifier as ``fc``."""
    out = {}
    for key, value in state.items():
        if key.startswith('backbone.'):
            out[key[len('backbone.'):]] = value
        elif key.startswith('head.fc.'):
            out['fc.' + key[len('head.fc.'):]] = value
    return out


def test_a_torchvision_state_dict_is_mapped_as_load_from_maps_it(tmp_path):
    from mmrecprune.analysis import load_exact_weights
    trained = _tiny_classifier(tmp_path)
    for p in trained.parameters():
        p.data.uniform_()
    path = str(tmp_path / 'torchvision.pth')
    torch.save(_torchvision_format(trained.state_dict()), path)
    fresh = _tiny_classifier(tmp_path)
    load_exact_weights(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    # torchvision's ImageNet classifier (1000 classes) does not fit a 10-class head: the
    # message says so and names the converter
    state = _torchvision_format(trained.state_dict())
    state.update({'fc.weight': torch.zeros(1000, 64), 'fc.bias': torch.zeros(1000)})
    torch.save(state, path)
    with pytest.raises(ValueError, match='torchvision-format state dict') as err:
        load_exact_weights(_tiny_classifier(tmp_path), path)
    assert 'tools/model_converters/starting_weights.py' in str(err.value)
