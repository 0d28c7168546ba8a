"""A reconfigured engine built on the side, from the running one and a new configuration.

Nothing here touches the running engine's arrays: the caller swaps the result in under its
lock, so a configuration that fails to validate or compile leaves serving untouched.
"""

from __future__ import annotations

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError
from allocator.policies import make_policy, policy_class
from allocator.serving.config import AllocatorConfig


def stage_engine(running: Engine, old: AllocatorConfig, new: AllocatorConfig, seed: int) -> Engine:
    """The engine for ``new``, carrying what ``running`` learned and its contract queues.

    Arms missing from ``new`` are retired and new ones added; changing the policy kind or
    its dimensions is refused (it would discard learning).
    """
    if new.engine.policy.kind != old.engine.policy.kind:
        raise InvalidInputError(
            f"policy kind {old.engine.policy.kind!r} → {new.engine.policy.kind!r} would "
            "discard the learned state: build a new Allocator instead"
        )
    old_cls, new_cls = policy_class(old.engine.policy), policy_class(new.engine.policy)
    if new_cls is not old_cls:  # e.g. factored_value's click_model: other state arrays
        raise InvalidInputError(
            f"policy {old.engine.policy.kind!r} as {old_cls.__name__} → {new_cls.__name__} "
            "would discard the learned state: build a new Allocator instead"
        )
    for arm in new.arms:
        known = running.registry.index_of(arm.id)
        if known is not None and running.registry.group_of(known) != arm.group:
            raise InvalidInputError(
                f"arms: {arm.id!r} was registered in group "
                f"{running.registry.group_of(known)!r}, cannot move to {arm.group!r}"
            )
    if new.arms_file is not None and new.arms_file != old.arms_file:
        raise InvalidInputError(
            "reconfigure keeps the catalogue of the running allocator when arms come from an "
            "arms_file: give the same arms_file (arms change through add_arms / retire_arms)"
        )
    listed = new.arms_file is None
    keep = {a.id for a in new.arms} if listed else set(running.registry.members_all())
    same_features = not new.engine.policy.USES_ARM_FEATURES or new.arms == old.arms
    if (
        new.engine.policy == old.engine.policy
        and keep == set(running.registry.members_all())
        and same_features
    ):
        engine = Engine(running.policy, new.constraints)  # contracts only: share the model
        engine.contracts.carry_from(running.contracts)
        return engine
    registry = running.registry.copy()
    registry.retire([i for i in registry.members_all() if i not in keep])
    for arm in new.arms:
        known = registry.index_of(arm.id)
        if known is None or not registry.active[known]:
            registry.add([arm.id], arm.group)
    features = None
    if new.engine.policy.USES_ARM_FEATURES:
        given = {a.id: a.features for a in new.arms}
        old_features = running.policy.given_arm_features()
        assert old_features is not None  # the same family: it takes features
        features = np.array([
            given[arm_id] if arm_id in given else old_features[i]
            for i, arm_id in enumerate(registry.all_ids())
        ])  # fmt: skip
    policy = make_policy(new.engine.policy, registry, seed, features)
    policy.state.stream[:] = running.policy.state.stream
    policy.adopt_learned(running.policy)
    engine = Engine(policy, new.constraints)
    engine.contracts.carry_from(running.contracts)
    return engine
