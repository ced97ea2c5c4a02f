"""A bounded mutation fuzz of every loader on real files (the longer run is
``tools/benchmarks/fuzz_loaders.py``): real tickets (unstructured, structured, with fill
values) and real MMEngine checkpoints (as MMEngine writes them, and plain), mutated at the
opcode level (:mod:`mmrecprune.testing.checkpoint_fuzzer`), each loaded in a subprocess under
a memory limit. A case passes when it loads or is refused with ``TicketError`` /
``UnsafeCheckpointError``, no marker file appears, no process dies by a signal, the class-wide
statistics table is unchanged and peak memory stays within the stated bound.
"""
import collections
import io

import pytest
import torch

from mmrecprune.fileio import load_mmengine_checkpoint, plain_checkpoint
from mmrecprune.testing.checkpoint_fuzzer import Mutator, run_cases, write_cases
from tests.security.test_payloads import MEMORY_CONSTANT, MEMORY_FACTOR

pytestmark = pytest.mark.usefixtures('single_thread')
CASES_PER_SOURCE = 80


def _plain_checkpoint_bytes(path):
    buffer = io.BytesIO()
    torch.save(plain_checkpoint(load_mmengine_checkpoint(path)), buffer)
    return buffer.getvalue()


def test_fuzz_loaders(tmp_path, r18_tickets, mbv2_ticket, training_checkpoint):
    marker = tmp_path / 'ran'
    read = lambda p: open(p, 'rb').read()  # noqa: E731
    sources = dict(
        ticket_unstructured=('ticket', read(r18_tickets['unstructured'])),
        ticket_structured=('ticket', read(r18_tickets['structured'])),
        ticket_filled=('ticket', read(mbv2_ticket)),
        checkpoint_mmengine=('checkpoint', read(training_checkpoint)),
        checkpoint_plain=('checkpoint', _plain_checkpoint_bytes(training_checkpoint)))
    cases = []
    for seed, (name, (kind, data)) in enumerate(sources.items()):
        cases += write_cases(Mutator(data, marker, seed=seed), CASES_PER_SOURCE, str(tmp_path),
                             kind, name)
    done, peak = run_cases(cases, str(tmp_path))
    outcomes = collections.Counter(c['outcome'].split(':')[0] for c in done)
    failed = [(c['name'], c['outcome']) for c in done
              if c['outcome'] not in ('loaded', 'refused')]
    print(f'fuzz: {len(done)} cases, {dict(outcomes)}, peak growth {peak / 2 ** 20:.1f} MiB')
    assert len(done) == len(cases)
    assert not failed, failed[:10]
    assert not marker.exists()
    assert not any(c['stats_changed'] for c in done)
    assert peak <= MEMORY_FACTOR * max(c['size'] for c in cases) + MEMORY_CONSTANT
    assert outcomes['refused'] > len(cases) // 2  # the mutations do reach the checks
