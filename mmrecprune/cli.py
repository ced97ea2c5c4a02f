"""One error path for the command-line tools: bad input gets one line, not a traceback, and
nothing is overwritten.

Every tool in ``tools/`` ends with::

    if __name__ == '__main__':
        sys.exit(run_tool(main))

:func:`run_tool` runs ``main`` and turns the errors a user causes (a missing or unreadable file,
a file of the wrong kind, a config that does not parse, a refused output) into one line on
stderr, ``<tool>: error: <message>``, and exit status 2, argparse's convention for bad input.
Anything else is a bug and keeps its traceback (``MMRECPRUNE_TRACEBACK=1`` shows the traceback
of the expected errors too). The ``check_*`` helpers raise :class:`CLIError` with a message
that names the file; a tool calls them before it starts any work.

This module imports nothing but the standard library (mmengine lazily, in
:func:`load_config`).
"""
import os
import os.path as osp
import sys
import zipfile

#: the exit status of a refused input (argparse exits 2 for bad arguments too)
BAD_INPUT = 2
#: the exit status when a stage a pipeline runs fails (its own output says why)
STAGE_FAILED = 1
#: set to 1 to see the traceback of an expected error as well
DEBUG_ENV = 'MMRECPRUNE_TRACEBACK'


class CLIError(SystemExit):
    """Bad input, named by the tool that found it.

    A ``SystemExit`` subclass: uncaught (a tool's ``main`` called from Python) it still stops
    the program with its message and no traceback; :func:`run_tool` prints it as
    ``<tool>: error: <message>`` and exits with status 2.
    """

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)

    def __str__(self):
        return self.message


def _expected_errors():
    """The exception types that mean bad input. The project's own types are looked up only in
    modules already imported: an error of a module the tool never loaded cannot occur."""
    import pickle
    types = [OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile]
    for module, name in (('mmrecprune.fileio', 'UnsafeCheckpointError'),
                         ('mmrecprune.fileio.archive_reader', 'UnsafeCheckpointError'),
                         ('mmrecprune.ticket_schema', 'TicketError'),
                         ('mmrecprune.tickets', 'TicketError'),
                         ('mmengine.config.utils', 'ConfigParsingError'),
                         ('yaml', 'YAMLError')):
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            types.append(found)
    return tuple(types)


def one_line(err):
    """``err`` as one line: an OSError as ``<file>: <reason>``, anything else its message with
    the line breaks folded (its type name when it has no message)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f'{err.filename}: {err.strerror}'
    else:
        text = str(err)
        if isinstance(err, KeyError) and len(err.args) == 1:
            text = str(err.args[0])
    text = ' '.join(text.split())
    return text or type(err).__name__


def tool_name():
    """What argparse calls the running tool (``prune_on_the_fly.py``)."""
    return osp.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'mmrecprune'


def fail(message, status=BAD_INPUT):
    """Print ``<tool>: error: <message>`` (one line) to stderr and exit with ``status``."""
    sys.stdout.flush()
    print(f'{tool_name()}: error: {" ".join(str(message).split())}', file=sys.stderr,
          flush=True)
    sys.exit(status)


def run_tool(main, *args, **kwargs):
    """Run ``main(*args, **kwargs)`` and return what it returns; bad input ends the program
    with one line on stderr and exit status 2 (see the module docstring)."""
    import subprocess
    try:
        return main(*args, **kwargs)
    except CLIError as err:
        if os.environ.get(DEBUG_ENV) == '1':
            raise
        fail(err.message)
    except subprocess.CalledProcessError as err:  # a stage of a pipeline: its output says why
        if os.environ.get(DEBUG_ENV) == '1':
            raise
        cmd = err.cmd if isinstance(err.cmd, str) else ' '.join(str(c) for c in err.cmd)
        fail(f'{cmd} exited with status {err.returncode} (its output is above)', STAGE_FAILED)
    except Exception as err:  # noqa: BLE001  the expected types only; the rest is re-raised
        if not isinstance(err, _expected_errors()) or os.environ.get(DEBUG_ENV) == '1':
            raise
        fail(one_line(err))


# -- checks a tool runs before any work ---------------------------------------------------------
def check_input_file(path, what='input file', allow_empty=False):
    """``path`` if it is a readable file, else :class:`CLIError` naming it (missing, a
    directory, unreadable, or empty unless ``allow_empty``)."""
    if path is None:
        return None
    path = os.fspath(path)
    if not osp.exists(path):
        raise CLIError(f'{what} {path}: no such file')
    if osp.isdir(path):
        raise CLIError(f'{what} {path} is a directory; give a file')
    if not os.access(path, os.R_OK):
        raise CLIError(f'{what} {path} is not readable (permissions)')
    if not allow_empty and osp.getsize(path) == 0:
        raise CLIError(f'{what} {path} is empty (0 bytes): an interrupted copy or write?')
    return path


def check_input_dir(path, what='input folder'):
    """``path`` if it is an existing folder, else :class:`CLIError` naming it."""
    if path is None:
        return None
    path = os.fspath(path)
    if not osp.exists(path):
        raise CLIError(f'{what} {path}: no such folder')
    if not osp.isdir(path):
        raise CLIError(f'{what} {path} is a file, not a folder')
    return path


def check_output_path(path, force=False, what='output', flag='--force'):
    """``path`` if the tool may write it, else :class:`CLIError`: an existing file is refused
    unless ``force`` (the message names ``flag``), a folder always, and so is a path whose
    parent is a file."""
    if path is None:
        return None
    path = os.fspath(path)
    if osp.isdir(path):
        raise CLIError(f'{what} {path} is a directory; give a file name')
    if osp.lexists(path) and not force:
        raise CLIError(f'{what} {path} exists; pass {flag} to overwrite it (nothing was '
                       'written)')
    _no_file_above(osp.dirname(osp.abspath(path)), path, what)
    return path


def _no_file_above(folder, path, what):
    """:class:`CLIError` when ``folder`` (or the first of its parents that exists) is a file."""
    while folder and not osp.exists(folder):
        folder = osp.dirname(folder) if osp.dirname(folder) != folder else ''
    if folder and not osp.isdir(folder):
        if folder == osp.abspath(path):
            raise CLIError(f'{what} {path} is a file, not a folder')
        raise CLIError(f'{what} {path}: {folder} is a file, not a folder')


def check_work_dir(path, what='--work-dir'):
    """``path`` if it is a folder or can become one (MMEngine's work dirs, a pipeline's), else
    :class:`CLIError`: an existing file, or a path under one."""
    if path is None:
        return None
    path = os.fspath(path)
    _no_file_above(osp.abspath(path), path, what)
    return path


def check_torch_archive(path, what='checkpoint'):
    """``path`` if it is a file ``torch.save`` wrote (a zip archive with a ``data.pkl``; what
    every checkpoint and ticket is since PyTorch 1.6), else :class:`CLIError` naming it. Cheap
    and without torch: the loaders check the content itself. A URL (``https://...``,
    ``open-mmlab://...``: MMEngine downloads it) is left to the loader."""
    if path is not None and '://' in os.fspath(path):
        return path
    check_input_file(path, what)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        names = None
    if not names or not any(n.split('/', 1)[-1] == 'data.pkl' for n in names):
        raise CLIError(f'{what} {path} is not a PyTorch checkpoint (torch.save writes a zip '
                       f'archive with a data.pkl; this file is {_kind_of(path)})')
    return path


def _kind_of(path):
    """A guess at what a refused file is, for the message."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(b'PK'):
        return 'another zip archive'
    if head[:1] == b'\x80':
        return 'a bare pickle (refused: loading it could run code)'
    try:
        head.decode('utf-8')
    except UnicodeDecodeError:
        return 'binary data of another format'
    return 'a text file'


def load_config(path, cfg_options=None, what='config'):
    """``mmengine.config.Config.fromfile(path)`` with ``cfg_options`` merged; a missing file, a
    file that is no config (a checkpoint, a ticket, text) or a bad ``--cfg-options`` key is a
    :class:`CLIError` naming it."""
    from mmengine.config import Config
    check_input_file(path, what, allow_empty=True)
    if osp.splitext(path)[1] not in ('.py', '.json', '.yaml', '.yml'):
        raise CLIError(f'{what} {path} is not a config file (.py, .json, .yaml or .yml; this '
                       f'one is {_kind_of(path)})')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # noqa: BLE001  the file is the user's: its errors are input errors
        raise CLIError(f'{what} {path} does not load as an MMEngine config: '
                       f'{type(err).__name__}: {one_line(err)}') from None
    return merge_cfg_options(cfg, cfg_options, path)


def merge_cfg_options(cfg, cfg_options, path='the config'):
    """``cfg`` with ``--cfg-options`` merged (MMEngine's ``merge_from_dict``); an option that
    does not apply (an index past a list, a key under a value) is a :class:`CLIError`."""
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as err:  # noqa: BLE001
            raise CLIError(f'--cfg-options do not apply to {path}: {type(err).__name__}: '
                           f'{one_line(err)}') from None
    return cfg


def _config_that_writes(path):
    """The shipped config whose default work dir ``path`` lies in (``work_dirs/NAME/...`` is
    written by ``configs/**/NAME.py``), relative to the configs folder; None if none does."""
    parts = osp.normpath(path).split(os.sep)
    if 'work_dirs' not in parts[:-1]:
        return None
    name = parts[parts.index('work_dirs') + 1]
    configs = osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')
    for folder, _, files in os.walk(configs, followlinks=True):
        if f'{name}.py' in files:
            return osp.join('configs', osp.relpath(osp.join(folder, f'{name}.py'), configs))
    return None


def _starting_files(cfg):
    """``(option, path)`` of every local file the config starts from: ``load_from``, the
    backbone's ``init_cfg.checkpoint``, mmseg's model-level ``pretrained`` and a ticket."""
    model = cfg.get('model', None) or {}
    backbone = model.get('backbone', None) or {}
    init_cfg = backbone.get('init_cfg', None)
    found = [('load_from', cfg.get('load_from', None)),
             ('model.pretrained', model.get('pretrained', None)),
             ('model.backbone.ticket', backbone.get('ticket', None))]
    if isinstance(init_cfg, dict):
        found.append(('model.backbone.init_cfg.checkpoint', init_cfg.get('checkpoint', None)))
    # URLs and 'torchvision://'-style names are MMEngine's to fetch; only local paths are ours
    return [(option, path) for option, path in found
            if isinstance(path, str) and path and '://' not in path]


def check_starting_files(cfg, config_path='the config'):
    """Stop before anything is built when a file the config starts from is missing, with the
    option, the file and how to make it (the config that writes it, or the option to point
    elsewhere)."""
    for option, path in _starting_files(cfg):
        if osp.isfile(path):
            continue
        writer = _config_that_writes(path)
        how = (f'`python tools/train.py {writer}` writes it at the end of its schedule, or'
               if writer else 'make it first, or')
        raise CLIError(f'{option} {path} of {config_path} does not exist: {how} point to a file '
                       f'you have with --cfg-options {option}=PATH')
