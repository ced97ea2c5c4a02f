"""The one DDP path of the pruning hooks: rank 0 decides, every rank takes its decision, then
every rank proves it holds the same masks and weights. Pruners plan without side effects and
commit a plan, so nothing is applied before the broadcast."""
import torch
from mmengine.dist import all_gather, all_reduce, broadcast, get_world_size


def broadcast_masks(masks):
    """Replace, in place, every bool mask in ``masks`` by rank 0's (no-op without DDP)."""
    if get_world_size() == 1:
        return masks
    for name, mask in masks.items():
        as_int = mask.to(torch.uint8)
        broadcast(as_int, src=0)
        masks[name] = as_int.bool()
    return masks


def _digest(tensors):
    flat = torch.cat([t.detach().flatten().double().cpu() for t in tensors])
    position = torch.arange(1, len(flat) + 1, dtype=torch.float64)
    return torch.stack([flat.sum(), (flat * position).sum(), (flat * position.sqrt()).sum()])


def check_ranks_agree(logger, owner, masks, weights, what='masks'):
    """Raise unless every rank holds the same ``masks`` and ``weights`` (dicts of tensors);
    log ``'<owner>: <what> identical on N ranks (weights too)'``."""
    world = get_world_size()
    if world == 1:
        return
    for kind, tensors in ((what, masks), ('weights', weights)):
        digests = all_gather(_digest([tensors[k] for k in sorted(tensors)]))
        if any(not torch.equal(d, digests[0]) for d in digests):
            raise RuntimeError(f'{owner}: {kind} differ between ranks after rank 0\'s '
                               'decision was broadcast')
    logger.info(f'{owner}: {what} identical on {world} ranks (weights too)')


def _synchronized_plan(pruner):
    """The first half of a step on every rank: average the pruner's statistics, plan, and
    take rank 0's plan (broadcast). Nothing is changed yet."""
    if get_world_size() > 1:
        for tensor in pruner.statistics():
            all_reduce(tensor, op='mean')  # every rank decides on the same statistics
    plan = pruner.plan()
    broadcast_masks(plan.masks)
    broadcast_masks(plan.restored)
    return plan


def _check_step(pruner, logger, owner):
    """The last half: every rank holds the same masks and weights after the step."""
    check_ranks_agree(logger, owner, pruner.masks, pruner.synced_tensors(),
                      what='masks' if pruner.kind == 'unstructured' else 'channel masks')


def synchronized_step(pruner, logger, owner, commit=None):
    """One pruning step on every rank: the pruner's statistics are averaged, rank 0's plan is
    broadcast, every rank carries it out, then every rank proves it holds the same masks and
    weights.

    Args:
        pruner (BasePruner): The attached pruner.
        logger: Where the check reports (``runner.logger``).
        owner (str): The hook's name in messages.
        commit (callable, optional): ``commit(plan)`` carries rank 0's plan out and returns
            what changed (for ``optimizer_slices``). Defaults to ``pruner.commit``. A
            retraining-free cut scored in several recoveries passes one that commits the same
            plan once per recovery, the model put back between them
            (:func:`~mmrecprune.analysis.score_pruning`); the ranks are checked once, after
            the last commit, whose state the model keeps.

    Returns:
        tuple: ``(plan, changed)``: rank 0's plan and what ``commit`` returned.
    """
    plan = _synchronized_plan(pruner)
    changed = (pruner.commit if commit is None else commit)(plan)
    _check_step(pruner, logger, owner)
    return plan, changed


def check_slim(pruner, logger, owner):
    """After a structured pruner slimmed its model during training (or a resume slimmed it):
    every rank holds the same channels and the same weights."""
    check_ranks_agree(logger, owner, pruner.slimmed_channels(), pruner.synced_tensors(),
                      what='slim channels')
