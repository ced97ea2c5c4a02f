"""A mutation fuzzer for the loaders: attacks on real tickets and real MMEngine checkpoints.

Mutations are made on the pickle stream (``data.pkl``) of a real archive, at the opcode level
(positions found with :mod:`pickletools`, which only parses), and the archive is zipped again:

* ``opcode``: a byte flipped, an opcode deleted or repeated, the stream cut short;
* ``global``: every GLOBAL replaced by every name the loaders know and by names that run code;
* ``state``: BUILD (``__setstate__``, ``__class__``, ``__dict__`` entries), SETITEM and slot
  state injected after every object, with a payload that writes a marker file if it runs;
* ``storage``: a storage's declared size made huge, zero, or off by one;
* ``geometry``: a tensor's offset, sizes and strides made huge, zero (expanded views) or
  negative;
* ``length``: length fields (strings, memo indices, long integers) made huge;
* ``swap``: type confusion, a scalar replaced by an earlier object (tensor, dict, record).

Each case is ``(name, archive bytes)``. :func:`run_cases` loads many of them in one
subprocess under a memory limit and reports, per case, whether it loaded, was refused with the
project's error, failed otherwise, or killed the process; and whether a marker appeared.
"""
import io
import json
import os
import os.path as osp
import pickletools
import random
import struct
import subprocess
import sys
import zipfile

#: names the loaders know (substituted everywhere) and names that would run code
KNOWN_GLOBALS = (
    'collections\nOrderedDict', 'collections\nCounter', 'torch._utils\n_rebuild_tensor_v2',
    'torch._utils\n_rebuild_parameter', '_codecs\nencode', 'torch\nFloatStorage',
    'torch\nLongStorage', 'torch\nByteStorage', 'mmengine.logging.history_buffer\nHistoryBuffer',
    '__builtin__\ngetattr', 'numpy._core.multiarray\n_reconstruct', 'numpy\nndarray',
    'numpy\ndtype', 'numpy._core.multiarray\nscalar', 'numpy.core.multiarray\n_reconstruct')
CODE_GLOBALS = ('builtins\nexec', 'builtins\neval', 'os\nsystem', 'posix\nsystem',
                'subprocess\nrun', 'builtins\nopen', 'builtins\nsetattr', 'builtins\nglobals',
                'mmrecprune.ticket_schema\nbuild_ticket_backbone', 'torch\nload',
                'numpy\nfrombuffer', 'numpy.lib.format\nread_array', 'pickle\nloads')


def _str(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def _global(name):
    return b'c' + name.encode() + b'\n'


def marker_payload(marker):
    """Opcodes pushing ``exec("open(marker, 'w')...")``'s result: runs only if a loader calls
    what a file names."""
    code = f'open({str(marker)!r}, "w").write("ran")'
    return _global('builtins\nexec') + _str(code) + b'\x85R'


def pickle_ops(data):
    """``[(name, arg, start, end)]`` of the stream's opcodes (parsed, nothing run)."""
    ops = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    return [(name, arg, start, end) for (name, arg, start), end in zip(ops, ends)]


def read_records(archive):
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def rezip(records, replace):
    """An archive of ``records`` with those named in ``replace`` (by suffix) replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as zf:
        for name, data in records:
            for suffix, new in replace.items():
                if name.endswith(suffix):
                    data = new
            zf.writestr(name, data)
    return out.getvalue()


def _splice(data, start, end, insert=b''):
    return data[:start] + insert + data[end:]


def _ints_before(ops, index, count):
    """Indices of the integer-pushing opcodes among the ``count`` before ``index``."""
    found = []
    for j in range(index - 1, max(index - count, 0) - 1, -1):
        if ops[j][0] in ('BININT', 'BININT1', 'BININT2', 'LONG1'):
            found.append(j)
    return found


def _int_op(value):
    if 0 <= value < 256:
        return b'K' + bytes([value])
    if -2 ** 31 <= value < 2 ** 31:
        return b'J' + struct.pack('<i', value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(raw)]) + raw


class Mutator:
    """All mutation families over one archive; :meth:`cases` draws from them in turn."""

    def __init__(self, archive, marker, seed=0):
        self.records = read_records(archive)
        self.pkl = next(d for n, d in self.records if n.endswith('/data.pkl'))
        self.ops = pickle_ops(self.pkl)
        self.marker = marker
        self.rng = random.Random(seed)

    def _with(self, pkl):
        return rezip(self.records, {'/data.pkl': pkl})

    def opcode(self):
        r, pkl = self.rng, self.pkl
        kind = r.choice(('flip', 'delete', 'repeat', 'truncate'))
        name, _, start, end = r.choice(self.ops)
        if kind == 'flip':
            pos = r.randrange(len(pkl))
            return f'opcode flip @{pos}', self._with(
                _splice(pkl, pos, pos + 1, bytes([pkl[pos] ^ (1 << r.randrange(8))])))
        if kind == 'delete':
            return f'opcode delete {name} @{start}', self._with(_splice(pkl, start, end))
        if kind == 'repeat':
            return f'opcode repeat {name} @{start}', self._with(
                _splice(pkl, start, start, pkl[start:end]))
        return f'opcode truncate @{start}', self._with(pkl[:start])

    def global_(self):
        globals_ = [op for op in self.ops if op[0] == 'GLOBAL']
        _, arg, start, end = self.rng.choice(globals_)
        new = self.rng.choice(KNOWN_GLOBALS + CODE_GLOBALS)
        return f'global {arg} -> {new.replace(chr(10), ".")}', self._with(
            _splice(self.pkl, start, end, _global(new)))

    def state(self):
        pushes = [op for op in self.ops if op[0] in (
            'REDUCE', 'NEWOBJ', 'EMPTY_DICT', 'EMPTY_LIST', 'BINGET', 'LONG_BINGET',
            'BINPERSID', 'TUPLE')]
        name, _, _, end = self.rng.choice(pushes)
        payload = marker_payload(self.marker)
        attr = self.rng.choice(('__setstate__', '__class__', '__reduce_ex__', '_metadata',
                                'statistics_methods', '_statistics_methods', 'max_length'))
        kind = self.rng.choice(('build', 'slots', 'setitem', 'build_twice'))
        if kind == 'build':
            insert = b'}' + _str(attr) + payload + b'sb'
        elif kind == 'slots':
            insert = b'N}' + _str(attr) + payload + b's\x86b'
        elif kind == 'setitem':
            insert = _str(attr) + payload + b's'
        else:
            insert = b'}' + _str(attr) + payload + b'sb' + b'}' + _str(attr) + b'Nsb'
        return f'state {kind} {attr} after {name} @{end}', self._with(
            _splice(self.pkl, end, end, insert))

    def storage(self):
        persids = [i for i, op in enumerate(self.ops) if op[0] == 'BINPERSID']
        index = self.rng.choice(persids)
        ints = _ints_before(self.ops, index, 4)
        if not ints:
            return self.opcode()
        _, _, start, end = self.ops[ints[0]]
        value = self.rng.choice((0, 1, 2 ** 31 - 1, 2 ** 40, 2 ** 62, -1))
        value = max(self.ops[ints[0]][1] + self.rng.choice((-1, 1)), 0) \
            if self.rng.random() < 0.3 else value
        return f'storage numel -> {value} @{start}', self._with(
            _splice(self.pkl, start, end, _int_op(value)))

    def geometry(self):
        persids = [i for i, op in enumerate(self.ops) if op[0] == 'BINPERSID']
        index = self.rng.choice(persids)
        ints = [j for j in range(index + 1, min(index + 14, len(self.ops)))
                if self.ops[j][0] in ('BININT', 'BININT1', 'BININT2', 'LONG1')]
        if not ints:
            return self.opcode()
        j = self.rng.choice(ints)
        _, _, start, end = self.ops[j]
        value = self.rng.choice((0, 2 ** 20, 2 ** 31 - 1, 2 ** 45, -1, -2 ** 31))
        return f'geometry int -> {value} @{start}', self._with(
            _splice(self.pkl, start, end, _int_op(value)))

    def length(self):
        fields = [op for op in self.ops if op[0] in ('BINUNICODE', 'LONG_BINPUT',
                                                       'LONG_BINGET', 'BINPUT')]
        name, _, start, end = self.rng.choice(fields)
        code = self.pkl[start:start + 1]
        if name == 'BINPUT':
            insert = b'r' + struct.pack('<I', self.rng.choice((2 ** 32 - 1, 2 ** 31)))
            return f'length memo put huge @{start}', self._with(_splice(self.pkl, start, end,
                                                                        insert))
        huge = self.rng.choice((2 ** 32 - 1, 2 ** 31, len(self.pkl) * 4))
        return f'length {name} -> {huge} @{start}', self._with(
            _splice(self.pkl, start, start + 5, code + struct.pack('<I', huge)))

    def swap(self):
        """Type confusion: a scalar replaced by an object made earlier (a tensor, a dict, a
        record) fetched from the memo."""
        puts = [(start, op[1]) for op in self.ops if op[0] in ('BINPUT', 'LONG_BINPUT')
                for start in [op[2]]]
        scalars = [op for op in self.ops if op[0] in (
            'BININT', 'BININT1', 'BININT2', 'BINUNICODE', 'NONE', 'NEWTRUE', 'NEWFALSE',
            'EMPTY_TUPLE', 'BINFLOAT', 'SHORT_BINSTRING')]
        name, _, start, end = self.rng.choice(scalars)
        earlier = [index for pos, index in puts if pos < start]
        if not earlier:
            return self.opcode()
        index = self.rng.choice(earlier)
        get = b'h' + bytes([index]) if index < 256 else b'j' + struct.pack('<I', index)
        return f'swap {name} @{start} -> memo {index}', self._with(
            _splice(self.pkl, start, end, get))

    FAMILIES = ('opcode', 'global_', 'state', 'storage', 'geometry', 'length', 'swap')

    def cases(self, count):
        for i in range(count):
            family = self.FAMILIES[i % len(self.FAMILIES)]
            yield getattr(self, family)()


# -- running cases in a subprocess under a memory limit ------------------------------------------
_CHILD = r'''
import json, os, resource, sys, traceback
spec = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(1)
import mmrecprune
from mmrecprune.fileio import UnsafeCheckpointError, load_mmengine_checkpoint
from mmrecprune.tickets import TicketError, load_ticket
from mmrecprune.models.pruned_backbone import build_backbone_from_ticket
import copy
from mmengine.logging import HistoryBuffer
HistoryBuffer()  # registers MMEngine's own statistics, as any first use does
stats_before = dict(HistoryBuffer._statistics_methods)
def use(obj):
    # what a victim does next: deep copies (EMA, message hub) and tensor clones
    obj = copy.deepcopy(obj)
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            item.clone()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, HistoryBuffer):
            item.mean(), item.update(1.0)
def vm_bytes():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
limit = vm_bytes() + spec['memory_limit']
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
progress = open(spec['progress'], 'w')
for case in spec['cases']:
    progress.write(case['path'] + '\n'); progress.flush()
    try:
        if case['kind'] == 'ticket':
            use(load_ticket(case['path']).state_dict)
            use(build_backbone_from_ticket(ticket=case['path'], out_indices=(0, 1, 2, 3))
                .state_dict())
        elif case['kind'] == 'checkpoint':
            use(load_mmengine_checkpoint(case['path'], map_location='cpu'))
        else:  # 'unsafe': what the harness must catch (its own self-check)
            use(torch.load(case['path'], weights_only=False))
        outcome = 'loaded'
    except (TicketError, UnsafeCheckpointError) as err:
        outcome = 'refused'
    except BaseException as err:
        outcome = 'error: ' + type(err).__name__ + ': ' + str(err)[:200]
    case['outcome'] = outcome
    case['stats_changed'] = dict(HistoryBuffer._statistics_methods) != stats_before
    print(json.dumps(case), flush=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(peak_growth=peak - base_rss)), flush=True)
'''


def run_cases(cases, folder, memory_limit=512 * 2 ** 20, timeout=600):
    """Load ``cases`` (dicts with ``path``, ``kind`` 'ticket' | 'checkpoint' | 'unsafe' (plain
    ``torch.load``, to check the harness), ``name``) in
    subprocesses; a case that kills its process is recorded and the rest run in a new one.

    Returns:
        tuple[list[dict], int]: each case with ``outcome`` ('loaded', 'refused', 'error: ...',
        'killed by signal N' or 'exit N'), and the largest growth of peak memory (bytes) of a
        child over its state after imports.
    """
    done, todo, peak = [], list(cases), 0
    env = dict(os.environ, OMP_NUM_THREADS='1')
    while todo:
        spec_path, progress = osp.join(folder, 'spec.json'), osp.join(folder, 'progress.txt')
        with open(spec_path, 'w') as f:
            json.dump(dict(cases=todo, progress=progress, memory_limit=memory_limit), f)
        proc = subprocess.run([sys.executable, '-c', _CHILD, spec_path], capture_output=True,
                              text=True, timeout=timeout, env=env)
        results = [json.loads(line) for line in proc.stdout.splitlines()
                   if line.startswith('{')]
        for r in results:
            if 'peak_growth' in r:
                peak = max(peak, r['peak_growth'])
        finished = [r for r in results if 'outcome' in r]
        done += finished
        todo = todo[len(finished):]
        if proc.returncode != 0 and todo:
            crashed = dict(todo.pop(0))
            crashed['outcome'] = (f'killed by signal {-proc.returncode}' if proc.returncode < 0
                                  else f'exit {proc.returncode}: {proc.stderr[-300:]}')
            done.append(crashed)
        elif proc.returncode != 0:
            raise RuntimeError(f'fuzz child failed after its cases: {proc.stderr[-2000:]}')
    return done, peak


def write_cases(mutator, count, folder, kind, prefix):
    """Write ``count`` mutated archives of ``mutator`` under ``folder``; return their specs."""
    specs = []
    for i, (name, data) in enumerate(mutator.cases(count)):
        path = osp.join(folder, f'{prefix}_{i:05d}.pth')
        with open(path, 'wb') as f:
            f.write(data)
        specs.append(dict(path=path, kind=kind, name=name, size=len(data)))
    return specs
