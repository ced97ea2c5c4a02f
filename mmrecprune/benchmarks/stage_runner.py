"""Run pipeline stages as ordinary tools/train.py / tools/test.py subprocesses, skipping
stages that already finished (used by the main job and the benchmarks)."""
import collections
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import threading
import time

from mmrecprune import cli


def _repo_root():
    """The checkout whose ``tools/`` and ``configs/`` the stages run (their working
    directory): the one this package lives in (an editable install, the repository itself),
    else the current directory."""
    here = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    return here if osp.isfile(osp.join(here, 'tools', 'train.py')) else os.getcwd()


ROOT = _repo_root()


class Pipeline:
    """Runs stages as subprocesses, records wall times, and skips finished stages."""

    def __init__(self, work_dir, force=False, threads_per_stage=None, report_only=False,
                 dry_run=False, cfg_options=(), label_output=False):
        self.work_dir = work_dir
        # label_output: prefix each line a stage prints with '[stage] ' (two stages running
        # side by side would otherwise interleave unmarked MMEngine logs)
        self.label_output = label_output
        # stages that failed: a task waiting for one stops at once instead of running it again
        self._failed = {}
        self.force = force
        # the user's --cfg-options: appended to every stage that runs a config (CONFIG_TOOLS)
        self.cfg_options = list(cfg_options or ())
        # report_only: run nothing; unfinished stages return None (tables of partial runs)
        self.report_only = report_only or dry_run
        # dry_run: print the commands of the stages that would run, run nothing
        self.dry_run = dry_run
        # stages may run from several threads (the benchmarks run two at once on 2 cores)
        self._lock = threading.Lock()
        # one lock per stage: a stage that several tasks need runs once, the others wait for it
        self._stage_locks = collections.defaultdict(threading.Lock)
        self.env = dict(os.environ)
        if threads_per_stage:
            self.env['OMP_NUM_THREADS'] = str(threads_per_stage)
        cli.check_work_dir(work_dir)
        os.makedirs(work_dir, exist_ok=True)
        self.results_path = osp.join(work_dir, 'results.json')
        self.results = {}
        if osp.isfile(self.results_path) and not force:
            self.results = read_results(self.results_path)

    def run(self, name, cmds, outputs, read_metrics=None):
        """Run ``cmds`` unless stage ``name`` finished before and its ``outputs`` exist."""
        with self._lock:
            stage_lock = self._stage_locks[name]
        with stage_lock:
            if name in self._failed:
                raise RuntimeError(f'stage {name!r} failed in another task: {self._failed[name]}')
            try:
                return self._run(name, cmds, outputs, read_metrics)
            except (subprocess.CalledProcessError, OSError) as err:
                self._failed[name] = cli.one_line(err)
                raise

    def _run(self, name, cmds, outputs, read_metrics):
        cmds = [with_cfg_options(cmd, self.cfg_options) for cmd in cmds]
        done = self.results.get(name)
        # with force, ``results`` starts empty: only stages of this invocation are reused
        if done and all(osp.exists(p) for p in outputs):
            print(f'[{name}] reusing the finished stage ({done["wall_s"]:.0f} s)', flush=True)
            return done
        if self.report_only:
            if self.dry_run:
                for cmd in cmds:
                    print(f'[{name}] would run: {" ".join(shlex.quote(c) for c in cmd)}',
                          flush=True)
            return None
        start = time.time()
        for cmd in cmds:
            print(f'[{name}] $ {" ".join(shlex.quote(c) for c in cmd)}', flush=True)
            if self.label_output:
                _run_labelled(cmd, name, self.env)
            else:
                subprocess.run(cmd, cwd=ROOT, check=True, env=self.env)
        record = dict(wall_s=time.time() - start, cmds=[' '.join(c) for c in cmds])
        if read_metrics is not None:
            record['metrics'] = read_metrics()
        with self._lock:
            self.results[name] = record
            with open(self.results_path, 'w') as f:
                json.dump(self.results, f, indent=2)
        return record


def _run_labelled(cmd, name, env):
    """``subprocess.run(cmd, check=True)`` with every line of its output (stdout and stderr
    together) printed as ``[name] line``."""
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors='replace',
                          bufsize=1) as proc:
        for line in proc.stdout:
            print(f'[{name}] {line}', end='', flush=True)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


#: the tools a stage runs that read a config and take ``--cfg-options`` (MMEngine's DictAction)
CONFIG_TOOLS = ('tools/train.py', 'tools/test.py', 'tools/prune_on_the_fly.py',
                'tools/analysis_tools/recalibrate_bn.py')


def with_cfg_options(cmd, options):
    """``cmd`` with ``--cfg-options *options`` appended when it runs one of
    :data:`CONFIG_TOOLS` (``[python, tool, ...]``). MMEngine's DictAction merges a second
    ``--cfg-options`` into the first, a key given again taking the later value: the user's
    options win over the stage's own."""
    if options and len(cmd) > 1 and cmd[1] in CONFIG_TOOLS:
        return [*cmd, '--cfg-options', *options]
    return list(cmd)


def add_cfg_options(parser):
    """The benchmarks' ``--cfg-options``: config overrides for every stage that runs a config
    (see :func:`with_cfg_options`); check them with :func:`check_cfg_options`."""
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config settings (xxx=yyy, as tools/train.py) in every '
                        'tools/train.py / tools/test.py / tools/prune_on_the_fly.py run, after '
                        'the run\'s own options, so they win; a finished stage is reused as it '
                        'is, so give a fresh --work-dir when you change them')


def add_run_options(parser, jobs=2):
    """What every stage-runner benchmark takes after its own options: ``--jobs``,
    ``--cfg-options``, ``--dry-run`` and ``--report-only``."""
    parser.add_argument('--jobs', type=int, default=jobs, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--dry-run', action='store_true',
                        help='print the commands of every stage still to run; run nothing')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; tabulate what has finished')


def check_cfg_options(options):
    """``options`` if every one is ``KEY=VALUE``, else :class:`CLIError` naming it."""
    for option in options:
        key, sep, _ = option.partition('=')
        if not sep or not key:
            raise cli.CLIError(f'--cfg-options {option!r}: expected KEY=VALUE')
    return list(options)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_results(path):
    """A pipeline's ``results.json`` (finished stages by name); :class:`CLIError` naming the
    file when it is not one (a pipeline writes it after every stage)."""
    try:
        results = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise cli.CLIError(f'{path} is not the results file of a pipeline (not JSON: '
                           f'{cli.one_line(err)}); move it away (its stages then run again)') \
            from None
    if not isinstance(results, dict) or not all(
            isinstance(v, dict) and 'wall_s' in v for v in results.values()):
        raise cli.CLIError(f'{path} is not the results file of a pipeline (expected '
                           '{stage: {"wall_s": ...}}); move it away (its stages then run '
                           'again)')
    return results


def check_pretrained(path, what='--pretrained'):
    """A benchmark's dense checkpoint: missing is fine (the benchmark trains it first), but an
    existing ``path`` must be a file torch.save wrote (:class:`CLIError` otherwise), before any
    stage starts from it."""
    if osp.exists(path):
        cli.check_torch_archive(path, what)
    else:
        cli.check_work_dir(osp.dirname(path) or '.', what)
    return path


def train_and_test(pipe, name, cfg, work_dir, ckpt_name, extra=(), outputs=()):
    """tools/train.py then tools/test.py on the final checkpoint; returns the stage record."""
    py = sys.executable
    ckpt = osp.join(work_dir, ckpt_name)
    metrics = osp.join(work_dir, 'test_metrics.json')
    # --force: the metrics file is this stage's own (a rerun replaces it)
    cmds = [[py, 'tools/train.py', cfg, '--work-dir', work_dir, *extra],
            [py, 'tools/test.py', cfg, ckpt, '--work-dir', work_dir, '--out-json', metrics,
             '--force', *extra]]
    return pipe.run(name, cmds, [ckpt, metrics, *outputs], lambda: read_json(metrics))


def run_parallel(tasks, jobs):
    """Run the callables ``tasks`` on ``jobs`` worker threads (each stage a single-thread
    subprocess: on 2 cores two such runs finish sooner than one two-thread run after another),
    in the order given, and return their results in that order. A stage several tasks need
    runs once: the others wait for it on the Pipeline's per-stage lock."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(t) for t in tasks]
        return [f.result() for f in futures]


def parse_with_scale(parser, scales, argv=None):
    """Parse with a ``--scale NAME`` option whose preset (a dict of argument defaults, e.g.
    ``dict(faithful=dict(subset=60000))``) sets the size arguments: ``default`` keeps the
    parser's own defaults, and arguments given on the command line still win."""
    scales = dict(default={}, **scales)
    dests = {action.dest for action in parser._actions}
    for name, preset in scales.items():  # a misspelt key would set nothing and say nothing
        unknown = sorted(set(preset) - dests)
        if unknown:
            raise ValueError(f'scale {name!r} sets {unknown}, which are not arguments of '
                             f'{parser.prog}')
    parser.add_argument('--scale', choices=sorted(scales), default='default',
                        help='sizes of the runs: ' + '; '.join(
                            f'{name}: ' + (', '.join(f'{k}={v}' for k, v in preset.items())
                                           or "the defaults below")
                            for name, preset in scales.items()))
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**scales[known.scale])
    return parser.parse_args(argv)


def write_summary(work_dir, table, summary, name='table'):
    """A benchmark's results: the Markdown table (``<name>.md``) and the numbers behind it
    (``summary.json``, or ``<name>.json`` for another name) in ``work_dir``."""
    with open(osp.join(work_dir, f'{name}.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(work_dir, 'summary.json' if name == 'table' else f'{name}.json'),
              'w') as f:
        json.dump(summary, f, indent=2)
