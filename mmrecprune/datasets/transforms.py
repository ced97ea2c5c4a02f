"""The few classification transforms the plugin needs without mmpretrain."""
import math
import random

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from mmrecprune.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """Pack ``img`` (HxWxC) and ``gt_label`` into ``inputs`` / ``data_samples``.

    ``data_samples`` is a :class:`BaseDataElement` with ``gt_label`` (LongTensor of shape
    [1]) and the meta keys listed in ``meta_keys``.
    """

    def __init__(self, meta_keys=('sample_idx', 'img_shape', 'ori_shape')):
        self.meta_keys = meta_keys

    def transform(self, results):
        img = np.ascontiguousarray(results['img'])
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        sample = BaseDataElement(metainfo={k: results[k] for k in self.meta_keys if k in results})
        if 'gt_label' in results:
            sample.gt_label = torch.as_tensor([results['gt_label']], dtype=torch.long)
        return dict(inputs=inputs, data_samples=sample)


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Inception-style crop: random area / aspect ratio, resized to ``scale`` (ImageNet).

    Args:
        scale (int): output edge length.
        crop_ratio_range (tuple): range of the crop area relative to the image.
        aspect_ratio_range (tuple): range of the crop aspect ratio.
    """

    def __init__(self, scale, crop_ratio_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3)):
        self.scale = scale
        self.crop_ratio_range = crop_ratio_range
        self.aspect_ratio_range = aspect_ratio_range

    def transform(self, results):
        img = results['img']
        h, w = img.shape[:2]
        for _ in range(10):
            area = h * w * random.uniform(*self.crop_ratio_range)
            log_ratio = (math.log(self.aspect_ratio_range[0]), math.log(self.aspect_ratio_range[1]))
            aspect = math.exp(random.uniform(*log_ratio))
            cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = random.randint(0, w - cw), random.randint(0, h - ch)
                break
        else:  # fall back to a centre crop
            cw = ch = min(h, w)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
        crop = img[y0:y0 + ch, x0:x0 + cw]
        results['img'] = mmcv.imresize(crop, (self.scale, self.scale))
        results['img_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class ResizeEdge(BaseTransform):
    """Resize so that the shorter edge equals ``scale`` (ImageNet evaluation)."""

    def __init__(self, scale):
        self.scale = scale

    def transform(self, results):
        img = results['img']
        h, w = img.shape[:2]
        factor = self.scale / min(h, w)
        results['img'] = mmcv.imresize(img, (int(round(w * factor)), int(round(h * factor))))
        results['img_shape'] = results['img'].shape[:2]
        return results
