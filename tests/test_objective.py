from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry, InvalidInputError, Objective, ObjectiveConfig


def test_reward_uses_group_take_rates():
    reg = ArmRegistry()
    reg.add(["taobao"], "taobao")
    reg.add(["merchant:1"], "mini_shop")
    reg.add(["douyin"], "douyin")
    cfg = ObjectiveConfig(
        click=0.1,
        order=1.0,
        gmv=2.0,
        take_rates={"taobao": 0.03, "mini_shop": 0.05},
        default_take_rate=0.01,
    )
    obj = Objective(cfg, reg)
    r = obj.reward([0, 1, 2], click=[1, 1, 0], order=[1, 0, 1], gmv=[100.0, 0.0, 50.0])
    np.testing.assert_allclose(r, [0.1 + 1 + 2 * 100 * 0.03, 0.1, 1 + 2 * 50 * 0.01])


@pytest.mark.parametrize("gmv", [float("nan"), -5.0, float("inf")])
def test_bad_outcomes(gmv):
    reg = ArmRegistry()
    reg.add(["a", "b"], "g")
    obj = Objective(ObjectiveConfig(), reg)
    with pytest.raises(InvalidInputError, match=r"outcome gmv\[1\]"):
        obj.reward([0, 1], gmv=[1.0, gmv])
