"""RecPrune's decoder: the channels-last, BN-folded forward computes what the plain
conv-BN-ReLU definition computes (loss and the gradients that reach the encoder), in both stages."""
import pytest
import torch
import torch.nn.functional as F

from mmrecprune.models.decoder import InverseResNetDecoder

pytestmark = pytest.mark.usefixtures('single_thread')


def reference_forward(decoder, feats, out_size):
    """The definition (the implementation before issue 22): NCHW, BN applied after each conv."""
    x, t = feats[-1], decoder.hint_weight
    for depth, stage in enumerate(decoder.stages):
        stage_idx = len(feats) - 1 - depth
        target = feats[stage_idx]
        if x.shape[-2:] != target.shape[-2:]:
            x = F.interpolate(x, size=target.shape[-2:], mode='bilinear', align_corners=False)
        for block in stage:
            out = F.relu(block.bn1(block.conv1(x)))
            x = F.relu(block.bn2(block.conv2(out)) + block.shortcut(x))
        if stage_idx + 1 in decoder.hint_stages:
            x = (1 - t) * x + t * target
    x = F.interpolate(x, size=out_size, mode='bilinear', align_corners=False)
    return decoder.head(x)


def _decoder():
    torch.manual_seed(0)
    decoder = InverseResNetDecoder((4, 8, 8, 16), blocks_per_stage=2)
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # statistics and affine terms of a trained one
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return decoder


def _loss_and_grads(forward, decoder, feats, image):
    feats = [f.clone().requires_grad_() for f in feats]
    loss = F.mse_loss(forward(decoder, feats, image.shape[-2:]), image)
    params = [p for p in decoder.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [f for f in feats] + params, allow_unused=True)
    return loss, grads


@pytest.mark.parametrize('stage', ['prune', 'decoder'])
def test_decoder_computes_the_definition(stage):
    decoder = _decoder()
    if stage == 'prune':  # frozen, eval-mode BN (folded into the convs)
        decoder.requires_grad_(False).eval()
    else:  # trained: BN in train mode, weights learn
        decoder.train()
    torch.manual_seed(1)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2),
             torch.randn(2, 16, 1, 1)]
    image = torch.randn(2, 3, 32, 32)
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    ours = _loss_and_grads(InverseResNetDecoder.forward, decoder, feats, image)
    decoder.load_state_dict(state)  # BN running statistics move in train mode
    reference = _loss_and_grads(reference_forward, decoder, feats, image)
    torch.testing.assert_close(ours[0], reference[0])
    assert sum(g is not None for g in ours[1][:4]) == 2  # the hinted stages 3 and 4
    for a, b in zip(ours[1], reference[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
