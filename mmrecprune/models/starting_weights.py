"""The weights a pruning run starts from must really load: a ticket pruned from random weights
because ``load_from`` did not fit is worse than no ticket."""
from mmrecprune.models.strict_pretrained import compare_state_dicts
from mmrecprune.tickets import without_ticket_header

BACKBONE_PREFIX = 'backbone.'
#: torchvision's classifier layer, and where our ImageClassifier keeps it
TORCHVISION_FC, CLASSIFIER_FC = 'fc.', 'head.fc.'


def map_torchvision_keys(own, state):
    """A torchvision-style state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...,
    ``fc.*``: mmdet's ResNet names its weights as torchvision does) with the keys of a model
    whose state dict is ``own``: ``backbone.`` prefixed, and ``fc.`` mapped to ``head.fc.``
    where ``own`` has that entry with the same shape; the other entries unchanged. ``None`` when
    ``state`` is not one: it already names a backbone entry of ``own``, or no bare key does.
    """
    backbone = {k for k in own if k.startswith(BACKBONE_PREFIX)}
    if any(k in state for k in backbone):
        return None
    if not any(BACKBONE_PREFIX + k in backbone for k in state):
        return None
    mapped = {}
    for key, value in state.items():
        if BACKBONE_PREFIX + key in backbone:
            key = BACKBONE_PREFIX + key
        elif key.startswith(TORCHVISION_FC):
            head = CLASSIFIER_FC + key[len(TORCHVISION_FC):]
            if head in own and getattr(value, 'shape', None) == own[head].shape:
                key = head
        mapped[key] = value
    return mapped


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
    mapped = map_torchvision_keys(own, state)
    if mapped is not None:  # a torchvision-style (backbone-only or classifier) state dict
        state.clear()
        state.update(mapped)
    missing, _, mismatched = compare_state_dicts(backbone, state)  # other entries may stay
    if missing or mismatched:
        raise ValueError(
            f'the starting weights ({source}) do not fit model.backbone: {len(missing)} of '
            f'{len(backbone)} backbone entries missing {missing[:3]}, {len(mismatched)} shape '
            f'mismatches {mismatched[:3]}. Pruning would start from random weights, so the run '
            'stops here. Give a checkpoint of the same architecture: backbone weights under '
            '"backbone." (MMEngine, mmpretrain, mmdet, mmseg) or a torchvision-style state_dict '
            '(conv1.weight, layer1.0.conv1.weight, ..., fc.*)')
