"""Fuzz every loader (tickets, PrunedBackbone, MMEngine checkpoints) longer than the test suite.

Makes its own real sources under ``--work-dir`` (reused when present): ResNet-18 tickets
(unstructured, structured), a MobileNetV2 ticket with non-zero fill values, and the
checkpoint of a two-iteration training run on the embedded Fashion-MNIST, as MMEngine writes
it and as plain data (``PlainCheckpointHook``). Each is mutated ``--cases`` times
(:mod:`mmrecprune.testing.checkpoint_fuzzer`) and every case is loaded in a subprocess under a
memory limit. Prints how many cases were tried, loaded, refused and failed (any other
exception, a signal, a marker file, a changed statistics table) and exits non-zero if any
failed. It takes no ``--cfg-options``: the one config it reads only makes the training
checkpoint among its sources, shrunk to two iterations here, and the loaders under test read no
config.

Example::

    python tools/benchmarks/fuzz_loaders.py --cases 2000 --work-dir work_dirs/fuzz_loaders
"""
import argparse
import collections
import glob
import io
import os
import os.path as osp
import shutil
import sys
import time

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.cli import check_work_dir, run_tool
from mmrecprune.fileio import load_mmengine_checkpoint, plain_checkpoint
from mmrecprune.testing.checkpoint_fuzzer import Mutator, run_cases, write_cases
from mmrecprune.testing.sources import (MBV2_W05, ONE_SHOT_70_FILLED, STRUCTURED_50,
                                        UNSTRUCTURED_60, export_test_ticket,
                                        shrink_classifier_cfg)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', type=int, default=1000, help='cases per source (1000)')
    parser.add_argument('--work-dir', default='work_dirs/fuzz_loaders')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--memory-limit-mb', type=int, default=512,
                        help='address space a loading process may add (512 MiB)')
    return parser.parse_args()


def make_sources(folder):
    r18 = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3])
    tickets = dict(
        ticket_unstructured=export_test_ticket(osp.join(folder, 'round_4.pth'), r18,
                                               UNSTRUCTURED_60),
        ticket_structured=export_test_ticket(osp.join(folder, 'slim.pth'), r18, STRUCTURED_50),
        ticket_filled=export_test_ticket(osp.join(folder, 'onthefly_p70.pth'), MBV2_W05,
                                         ONE_SHOT_70_FILLED))
    run_dir = osp.join(folder, 'run')
    if not osp.isfile(osp.join(run_dir, 'epoch_1.pth')):
        Runner.from_cfg(shrink_classifier_cfg(Config.fromfile(CONFIG), run_dir, max_epochs=1,
                                              train_size=32)).train()
    checkpoint = osp.join(run_dir, 'epoch_1.pth')
    buffer = io.BytesIO()
    torch.save(plain_checkpoint(load_mmengine_checkpoint(checkpoint)), buffer)
    sources = {name: ('ticket', open(path, 'rb').read()) for name, path in tickets.items()}
    sources['checkpoint_mmengine'] = ('checkpoint', open(checkpoint, 'rb').read())
    sources['checkpoint_plain'] = ('checkpoint', buffer.getvalue())
    return sources


def main():
    args = parse_args()
    os.makedirs(check_work_dir(args.work_dir), exist_ok=True)
    sources = make_sources(osp.join(args.work_dir, 'sources'))
    cases_dir = osp.join(args.work_dir, 'cases')
    shutil.rmtree(cases_dir, ignore_errors=True)
    os.makedirs(cases_dir)
    marker = osp.join(args.work_dir, 'marker')
    total = collections.Counter()
    failed = []
    start = time.time()
    for seed, (name, (kind, data)) in enumerate(sources.items(), args.seed):
        cases = write_cases(Mutator(data, marker, seed=seed), args.cases, cases_dir, kind, name)
        done, peak = run_cases(cases, cases_dir, memory_limit=args.memory_limit_mb * 2 ** 20,
                               timeout=3600)
        outcomes = collections.Counter(c['outcome'].split(':')[0] for c in done)
        bad = [c for c in done if c['outcome'] not in ('loaded', 'refused')
               or c['stats_changed']]
        failed += bad
        total.update(outcomes)
        print(f'{name:<22} {len(done):>6} cases  loaded {outcomes["loaded"]:>5}  refused '
              f'{outcomes["refused"]:>5}  failed {len(bad):>3}  file {len(data) / 1024:.0f} KiB'
              f'  peak growth {peak / 2 ** 20:.1f} MiB  ({time.time() - start:.0f} s)',
              flush=True)
        for path in glob.glob(osp.join(cases_dir, f'{name}_*.pth')):
            os.remove(path)
    if osp.exists(marker):
        failed.append(dict(name='marker file written', outcome='a payload ran'))
    tried = sum(total.values())
    print(f'tried {tried} cases: {total["loaded"]} loaded, {total["refused"]} refused, '
          f'{len(failed)} failed')
    for case in failed[:20]:
        print(f'  FAILED {case["name"]}: {case["outcome"]}')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    run_tool(main)
