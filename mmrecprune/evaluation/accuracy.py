"""Top-k accuracy for the classifier, without mmpretrain."""
import torch
from mmengine.evaluator import BaseMetric

from mmrecprune.registry import METRICS


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k classification accuracy in percent (keys ``accuracy/top1``, ``accuracy/top5``).

    Args:
        topk (int | tuple[int]): the k values. Defaults to ``(1, 5)``.
        collect_device (str): device for gathering results across ranks.
        prefix (str): metric name prefix. Defaults to ``'accuracy'``.
    """
    default_prefix = 'accuracy'

    def __init__(self, topk=(1, 5), collect_device='cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f'topk values must be >= 1, got {topk}')

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            self.results.append(dict(score=sample['pred_score'].cpu(),
                                     label=int(sample['gt_label'][0])))

    def compute_metrics(self, results):
        scores = torch.stack([r['score'] for r in results])
        labels = torch.tensor([r['label'] for r in results])
        maxk = min(max(self.topk), scores.shape[1])
        hits = scores.topk(maxk, dim=1).indices == labels[:, None]
        return {f'top{k}': hits[:, :min(k, maxk)].any(dim=1).float().mean().item() * 100
                for k in self.topk}


@METRICS.register_module()
class RotationAccuracy(BaseMetric):
    """RotNet's pretext accuracy in percent (``rotation/top1``): how many of the four rotated
    copies (0 / 90 / 180 / 270 degrees) of every image get their rotation right."""
    default_prefix = 'rotation'

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            pred = sample['pred_rotation'].cpu()
            self.results.append(int((pred == torch.arange(len(pred))).sum()))
            self.results.append(len(pred))

    def compute_metrics(self, results):
        hits, total = sum(results[0::2]), sum(results[1::2])
        return dict(top1=100.0 * hits / max(total, 1))
