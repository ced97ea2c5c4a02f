"""Turn a model-zoo checkpoint into the starting weights of a pruning config, checked.

    python tools/model_converters/starting_weights.py SRC DST --config CONFIG

SRC may be an mmpretrain classifier checkpoint (``backbone.*``, ``head.fc.*``, ``meta``), a
torchvision-format ResNet state_dict (``conv1.weight``, ``layer1.0...``, ``fc.*``), or an
mmdet / mmseg detector or segmentor checkpoint (its ``backbone.*`` is used). The keys are mapped
exactly as the pruning hooks map them for ``load_from`` (``mmrecprune.models.starting_weights``),
and the result is checked against the model CONFIG builds: a checkpoint of another
architecture or width, or a file that is no checkpoint, stops with a message that names what
does not fit, and DST is not written; an existing DST is refused unless ``--force``. DST
holds only the entries the model has (backbone, and the classifier head where its shape fits)
and goes into the config's ``load_from``.

The pruning configs also take SRC directly as ``load_from`` (the same mapping runs when the run
loads it); the converter is for checking a file once, and for a smaller file.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.registry import init_default_scope

from mmrecprune.cli import CLIError, check_input_file, check_output_path, load_config, run_tool
from mmrecprune.fileio import load_mmengine_checkpoint
from mmrecprune.models.starting_weights import adapt_starting_weights
from mmrecprune.registry import MODELS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='model-zoo checkpoint')
    parser.add_argument('dst', help='output checkpoint for load_from')
    parser.add_argument('--config', required=True, help='the pruning config it is meant for')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    return parser.parse_args()


def convert(src, dst, config, force=False):
    check_input_file(src, 'SRC checkpoint')
    if osp.abspath(src) == osp.abspath(dst):
        raise CLIError(f'DST {dst} is SRC: give another file (nothing is overwritten)')
    check_output_path(dst, force, 'DST')
    cfg = load_config(config)
    try:
        checkpoint = load_mmengine_checkpoint(src, map_location='cpu')
    except Exception as err:  # refused pickle, truncated zip, not a checkpoint at all
        raise CLIError(f'{src!r} is not a readable checkpoint: '
                       f'{str(err).strip().splitlines()[0] if str(err).strip() else err!r}; '
                       'nothing was written') from None
    if not isinstance(checkpoint, dict) or not any(
            torch.is_tensor(v) for v in checkpoint.get('state_dict', checkpoint).values()):
        raise CLIError(f'{src!r} holds no state_dict of tensors; nothing was written')
    init_default_scope(cfg.get('default_scope', 'mmrecprune'))
    model = MODELS.build(cfg.model)
    checkpoint = dict(checkpoint) if 'state_dict' in checkpoint else dict(state_dict=checkpoint)
    checkpoint['state_dict'] = dict(checkpoint['state_dict'])
    try:
        adapt_starting_weights(model, checkpoint, src)
    except ValueError as err:
        raise CLIError(f'{err}; nothing was written') from None
    own = model.state_dict()
    state = {k: v for k, v in checkpoint['state_dict'].items()
             if k in own and torch.is_tensor(v) and v.shape == own[k].shape}
    dropped = sorted(set(checkpoint['state_dict']) - set(state))
    meta = dict(source=osp.abspath(src), config=config, dropped=len(dropped))
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(dict(state_dict=state, meta=meta), dst)
    head = sum(k.startswith('head.') for k in state)
    print(f'{dst}: {len(state)} entries ({head} of the classifier head), {len(dropped)} dropped '
          f'(e.g. {dropped[:3]}); use it as load_from={dst!r}')
    return dst


def main():
    args = parse_args()
    return convert(args.src, args.dst, args.config, args.force)


if __name__ == '__main__':
    run_tool(main)
