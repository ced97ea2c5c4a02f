"""The weights a pruning run starts from must really load: a ticket pruned from random weights
because ``load_from`` did not fit is worse than no ticket."""
from mmrecprune.models.strict_pretrained import compare_state_dicts
from mmrecprune.tickets import without_ticket_header

BACKBONE_PREFIX = 'backbone.'
#: torchvision's classifier layer, and where our ImageClassifier keeps it
TORCHVISION_FC, CLASSIFIER_FC = 'fc.', 'head.fc.'


def adapt_starting_weights(model, checkpoint, source='load_from'):
    """Check, and where the format is known adapt in place, the checkpoint a pruning run loads.

    Accepted: checkpoints whose backbone weights are under ``backbone.`` (MMEngine, mmpretrain
    classifiers, mmdet / mmseg detectors and segmentors), and torchvision-style state dicts
    (``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.*``), whose keys are prefixed with
    ``backbone.`` (and ``fc.`` mapped to ``head.fc.`` where the shapes fit) before MMEngine loads
    them; mmdet's ResNet names its weights as torchvision does.

    Raises:
        ValueError: a backbone weight is missing from the checkpoint or has another shape; the
            message names them.
    """
    state = checkpoint.get('state_dict', checkpoint)
    own = without_ticket_header(model.state_dict())
    backbone = {k: v for k, v in own.items() if k.startswith(BACKBONE_PREFIX)}
    if not any(k in state for k in backbone):
        bare = {BACKBONE_PREFIX + k: k for k in list(state) if BACKBONE_PREFIX + k in backbone}
        if bare:  # a torchvision-style (backbone-only or classifier) state dict
            for new, old in bare.items():
                state[new] = state.pop(old)
            for key in [k for k in state if k.startswith(TORCHVISION_FC)]:
                new = CLASSIFIER_FC + key[len(TORCHVISION_FC):]
                if new in own and own[new].shape == state[key].shape:
                    state[new] = state.pop(key)
    missing, _, mismatched = compare_state_dicts(backbone, state)  # other entries may stay
    if missing or mismatched:
        raise ValueError(
            f'the starting weights ({source}) do not fit model.backbone: {len(missing)} of '
            f'{len(backbone)} backbone entries missing {missing[:3]}, {len(mismatched)} shape '
            f'mismatches {mismatched[:3]}. Pruning would start from random weights, so the run '
            'stops here. Give a checkpoint of the same architecture: backbone weights under '
            '"backbone." (MMEngine, mmpretrain, mmdet, mmseg) or a torchvision-style state_dict '
            '(conv1.weight, layer1.0.conv1.weight, ..., fc.*)')
