"""ONNX export of tickets' backbones and of detectors / segmentors / classifiers trained on
them, with an onnxruntime check (used by ``tools/deployment/pytorch2onnx.py`` and the speed
benchmark). ``onnx``, ``onnxscript`` and ``onnxruntime`` are optional: ``pip install
.[deploy]``."""
import os
import os.path as osp
import tempfile

import torch
from torch import nn

from mmrecprune.sparsity import example_input


class TensorOutputs(nn.Module):
    """``model`` with a plain tensor signature: ``forward(x)`` returns a flat tuple of tensors
    (``model(x, mode='tensor')`` of an MMEngine model, or ``model(x)`` of a backbone; nested
    lists / tuples / dicts flattened in order)."""

    def __init__(self, model, backbone_only=False):
        super().__init__()
        self.model = model.backbone if backbone_only else model
        self.mode_tensor = not backbone_only and hasattr(model, 'data_preprocessor')

    def forward(self, x):
        out = self.model(x, mode='tensor') if self.mode_tensor else self.model(x)
        return tuple(flatten(out))


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten(o)]
    raise TypeError(f'cannot export an output of type {type(out).__name__} to ONNX')


def _require(module):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f'ONNX export needs {module!r}: pip install onnx onnxscript '
                          'onnxruntime (or the "deploy" extra: pip install .[deploy])') from None


def export_onnx(model, input_shape, path, backbone_only=False, opset=18):
    """Export ``model`` (eval mode) for inputs of ``input_shape`` to ``path`` with PyTorch's
    ``torch.export``-based exporter; returns the wrapped module that was exported.

    The file is written to a temporary name first, so a failed export leaves an existing
    ``path`` untouched. Raises RuntimeError naming the model and the exporter's reason.
    """
    _require('onnx')
    _require('onnxscript')
    wrapped = TensorOutputs(model, backbone_only)
    wrapped.eval()
    x = example_input(input_shape)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.onnx.tmp')
    os.close(fd)
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapped, (x, ), dynamo=True, opset_version=opset,
                                        verbose=False)
        program.save(tmp)
        os.replace(tmp, path)
    except Exception as err:
        lines = [s for s in str(err).splitlines() if s.strip()]
        reason = next((s for s in lines if 'Error' in s and '<class' in s), lines[-1]
                      if lines else type(err).__name__)
        raise RuntimeError(f'cannot export {type(wrapped.model).__name__} to ONNX: {reason}; '
                           f'{path} was not written') from None
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return wrapped


class OnnxRuntimeModel:
    """An onnxruntime CPU session called like a model: ``model(x) -> list of tensors``."""

    def __init__(self, path, threads=None):
        ort = _require('onnxruntime')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        return [torch.from_numpy(o) for o in self.session.run(None, {self.input: x.numpy()})]


def max_abs_difference(wrapped, path, input_shape, seed=1):
    """Largest absolute difference between PyTorch and onnxruntime outputs on one random input,
    per output and overall: ``(overall, [per output])``."""
    x = example_input(input_shape, seed=seed)
    with torch.no_grad():
        ref = wrapped(x)
    got = OnnxRuntimeModel(path)(x)
    if len(got) != len(ref):
        raise RuntimeError(f'onnxruntime returned {len(got)} outputs, PyTorch {len(ref)}')
    diffs = [float((a - b).abs().max()) for a, b in zip(got, ref)]
    return max(diffs), diffs
