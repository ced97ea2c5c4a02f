"""Building the compiled kernels: on first use, with ``torch.utils.cpp_extension``, into torch's
extension cache (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), once per
torch version; later processes load the cached build in well under a second.

Why on first use and not at ``pip install``: the package stays a pure-Python wheel that installs
into any OpenMMLab environment (no build isolation to work around, no torch at build time), and
the kernels are built against the torch the user actually runs. The build needs what an MMCV
build from source needs: a C++ compiler and ninja. ``python -m mmrecprune.ops`` builds them
ahead (e.g. in an image, or before ``dist_train.sh`` so the ranks do not wait for the first).
"""
import os
import os.path as osp
import re
import shutil
import time

import torch

#: the kernels' C++ sources, shipped inside the package
CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')

#: the kernels' compiler flags (the loops are written for AVX2 lanes; -fopenmp-simd lets the
#: compiler vectorise the ``omp simd`` reductions without linking OpenMP)
CFLAGS = ('-O3', '-mavx2', '-mfma', '-fopenmp-simd')

#: a lock older than this was left by a killed build (a build takes well under a minute);
#: torch's own wait for it would never end
STALE_LOCK_SECONDS = 600

_BUILT = {}


class OpsUnavailable(RuntimeError):
    """The compiled kernels cannot be built or loaded here; the message says what is missing
    and how to go on without them."""


def _missing():
    """What stops a build here, or None."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ('AVX2', 'AVX512'):
        return f'the kernels are AVX2 code and this CPU has {capability}'
    compiler = os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None:
        return (f'no C++ compiler: {compiler!r} is not on PATH (install g++, e.g. '
                '`apt-get install g++`, or set CXX)')
    from torch.utils.cpp_extension import is_ninja_available
    if not is_ninja_available():
        return 'ninja is not installed (`pip install ninja`)'
    return None


def build_extension(source, name=None):
    """The extension module built from the C++ file ``source`` (a path; a bare file name is
    looked up in :data:`CSRC`), cached per process and, on disk, per torch version.

    Raises:
        OpsUnavailable: the source is missing, or the CPU, compiler or ninja cannot build it,
            or the build fails; the message names which.
    """
    path = source if osp.isabs(source) else osp.join(CSRC, source)
    if path in _BUILT:
        return _BUILT[path]
    if not osp.isfile(path):
        raise OpsUnavailable(f'{path} not found')
    missing = _missing()
    if missing is not None:
        raise OpsUnavailable(missing)
    from torch.utils.cpp_extension import load
    extension = extension_name(name or 'mmrecprune_' + osp.splitext(osp.basename(path))[0])
    _wait_for_another_build(extension)
    try:
        module = load(extension, [path], extra_cflags=list(CFLAGS), verbose=False)
    except (OSError, RuntimeError, ImportError) as error:
        # the compiler's first error, not ninja's closing line
        lines = str(error).strip().splitlines()
        first = next((line for line in lines if ': error' in line or 'error:' in line),
                     lines[-1])
        raise OpsUnavailable(f'building {osp.basename(path)} failed: {first.strip()[:300]}'
                             ) from error
    _BUILT[path] = module
    return module


def extension_name(stem):
    """The name an extension is built and cached under: torch's cache is keyed by name and
    sources, not by torch, and a build for another torch would load and break, so the version
    is in the name."""
    return f'{stem}_torch{re.sub(r"[^0-9A-Za-z]", "_", torch.__version__)}'


def _wait_for_another_build(extension):
    """Wait while another process builds ``extension`` (its lock file exists), as torch would,
    but not for a lock that a killed build left behind: torch waits for that one forever."""
    from torch.utils.cpp_extension import _get_build_directory
    lock = osp.join(_get_build_directory(extension, verbose=False), 'lock')
    while True:
        try:
            age = time.time() - os.path.getmtime(lock)
        except FileNotFoundError:
            return
        if age > STALE_LOCK_SECONDS:
            raise OpsUnavailable(
                f'{lock} is {age / 60:.0f} min old: a build of the kernels was interrupted and '
                'left its lock behind. Remove that file (when no build is running) and run '
                'again')
        time.sleep(0.5)
