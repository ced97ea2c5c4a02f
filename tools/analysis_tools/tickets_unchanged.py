"""Do two code versions make the same tickets? Train RecPrune and PSAP tickets, compare bitwise.

    # in each checkout (same machine, same threads), produce the tickets:
    python tools/analysis_tools/tickets_unchanged.py run --work-dir WORK \
        --pretrained PRETRAIN.pth --decoder DECODER.pth [--subset 4000]
    # then compare the two work dirs:
    python tools/analysis_tools/tickets_unchanged.py compare WORK_A WORK_B

``run`` trains the embedded default's RecPrune config (7 rounds) and the PSAP config with the
given starting checkpoints (from ``make demo``: ``pretrain/epoch_6.pth`` and
``recprune_decoder/epoch_3.pth``), optionally on a smaller fixed subset to save time, with
``tools/train.py`` and the configs' seeds (``--cfg-options`` go to both runs, after their own
options; give both checkouts the same). ``compare`` checks every tensor of the two
tickets (weights, masks, channel structure) for bit equality and exits 1 on any difference;
``meta`` is printed side by side, not compared (its keys may be redefined between versions).
"""
import argparse
import os
import os.path as osp
import subprocess
import sys

from mmrecprune import cli

RUNS = {
    'recprune': ('configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py', 'decoder',
                 'tickets/round_7.pth'),
    'psap': ('configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py', 'pretrained',
             'tickets/slim.pth'),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    run = sub.add_parser('run')
    run.add_argument('--work-dir', required=True)
    run.add_argument('--pretrained', required=True, help='dense classifier checkpoint')
    run.add_argument('--decoder', required=True, help="RecPrune decoder-stage checkpoint")
    run.add_argument('--subset', type=int, help='train on this many images per epoch')
    run.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                     help='override config settings (xxx=yyy) of both training runs')
    cmp = sub.add_parser('compare')
    cmp.add_argument('work_a')
    cmp.add_argument('work_b')
    return parser.parse_args()


def run(args):
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cli.check_torch_archive(args.pretrained, '--pretrained')
    cli.check_torch_archive(args.decoder, '--decoder')
    cli.check_work_dir(args.work_dir)
    for name, (config, start, _) in RUNS.items():
        options = [f'load_from={osp.abspath(getattr(args, start))}']
        if args.subset:
            options.append(f'train_dataloader.dataset.indices={args.subset}')
        options += args.cfg_options
        cmd = [sys.executable, 'tools/train.py', config, '--work-dir',
               osp.abspath(osp.join(args.work_dir, name)), '--cfg-options', *options]
        print('+', ' '.join(cmd), flush=True)
        subprocess.run(cmd, cwd=root, check=True, env=dict(os.environ, PYTHONPATH=root))


def tensors(ticket):
    """Every leaf of the ticket's weights, masks and channel structure, by dotted key."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f'{prefix}.{k}', v)
        else:
            out[prefix] = value

    for part in ('state_dict', 'masks', 'channel_structure'):
        walk(part, ticket.get(part) or {})
    return out


def same(x, y):
    import torch
    if torch.is_tensor(x) or torch.is_tensor(y):
        return (torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype
                and x.shape == y.shape and torch.equal(x, y))
    return x == y


def compare(args):
    for work in (args.work_a, args.work_b):
        cli.check_input_dir(work, 'work dir')
        for name, (_, _, rel) in RUNS.items():
            cli.check_torch_archive(osp.join(work, name, rel), 'ticket')
    from mmrecprune.fileio import UnsafeCheckpointError, read_plain

    def read(path):
        try:
            return read_plain(path)
        except UnsafeCheckpointError as err:
            raise cli.CLIError(f'{path} is not a readable ticket: {err}') from None

    differ = 0
    for name, (_, _, rel) in RUNS.items():
        a, b = (read(osp.join(w, name, rel)) for w in (args.work_a, args.work_b))
        ta, tb = tensors(a), tensors(b)
        bad = sorted(set(ta) ^ set(tb))
        bad += [k for k in sorted(set(ta) & set(tb)) if not same(ta[k], tb[k])]
        print(f'{name}: {len(ta)} tensors compared, {len(bad)} differ'
              + (f' (first: {bad[:5]})' if bad else ' -> bit-identical'))
        for key in sorted(set(a.get('meta', {})) | set(b.get('meta', {}))):
            va, vb = a.get('meta', {}).get(key), b.get('meta', {}).get(key)
            if not isinstance(va, dict) and not isinstance(vb, dict):
                print(f'    meta {key}: {va!r} | {vb!r}')
        differ += len(bad)
    sys.exit(1 if differ else 0)


def main():
    args = parse_args()
    run(args) if args.cmd == 'run' else compare(args)


if __name__ == '__main__':
    cli.run_tool(main)
