"""An engine's complete state as named arrays plus JSON meta, and back.

Everything generic comes from the policy's declared state; this module only adds the
registry, the contract queues and the key prefixes. Restoring checks every array before
anything is built (the policy's :meth:`~allocator.policies.state.ModelState.restore`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.constraints import ConstraintSet
from allocator.engine import Engine
from allocator.errors import SnapshotError
from allocator.policies import POLICY_CLASSES, PolicyConfig
from allocator.registry import ArmRegistry

POLICY_PREFIX = "policy."


def export_engine(engine: Engine) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Copies of the engine's arrays (policy, registry, contracts) and the policy meta."""
    arrays, meta = engine.policy.export_state()
    out = {POLICY_PREFIX + k: v for k, v in arrays.items()}
    out.update(engine.registry.to_arrays())
    out.update(engine.contracts.export_state())
    return out, meta


def restore_engine(
    policy_config: PolicyConfig,
    constraints: ConstraintSet,
    seed: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
) -> Engine:
    """Rebuild an engine exactly as exported: it then makes the same decisions."""
    try:
        registry = ArmRegistry.from_arrays(dict(arrays))
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"registry arrays are missing or inconsistent: {err}") from None
    policy_arrays = {
        k[len(POLICY_PREFIX) :]: v for k, v in arrays.items() if k.startswith(POLICY_PREFIX)
    }
    cls = POLICY_CLASSES[policy_config.kind]
    policy = cls.restore(policy_config, registry, seed, policy_arrays, meta)
    engine = Engine(policy, constraints)
    engine.contracts.restore_state(arrays)
    return engine
