"""Ridge reward model against a numpy.linalg.solve reference, fallback, cross-fitting."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from allocator import InvalidInputError
from allocator.replay import LoggedData, LogisticRewardModel, RidgeRewardModel
from tests import naive
from tests.worlds.logged import log_rounds, make_world


def logged(seed: int = 0, n: int = 400, subsets: bool = True) -> LoggedData:
    return log_rounds(make_world(seed), n, np.random.default_rng(seed), subsets).data


def design(x: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones((n, 1)) if x is None else np.column_stack([np.ones(n), x])


@pytest.mark.parametrize("l2", [0.3, 1.0, 25.0])
@pytest.mark.parametrize("contextual", [True, False])
def test_fit_matches_the_naive_ridge(l2, contextual):
    data = logged(1)
    if not contextual:
        data = dataclasses.replace(data, contexts=None)
    model = RidgeRewardModel(l2=l2).fit(data)
    coef, _ = naive.ridge_reward_model(data.contexts, data.actions, data.rewards, 4, l2)
    np.testing.assert_allclose(model.coef, coef, rtol=0, atol=1e-9)
    x = data.contexts
    want = np.einsum("ij,ij->i", design(x, data.n_rounds), coef[data.actions])
    np.testing.assert_allclose(model.predict(x, data.actions), want, rtol=0, atol=1e-9)
    ptr, idx = data.candidates()
    rows = np.repeat(np.arange(data.n_rounds), np.diff(ptr))
    flat = np.einsum("ij,ij->i", design(None if x is None else x[rows], rows.size), coef[idx])
    np.testing.assert_allclose(model.predict_candidates(data), flat, rtol=0, atol=1e-9)


def test_without_contexts_it_is_the_shrunk_arm_mean():
    data = dataclasses.replace(logged(2), contexts=None)
    l2 = 4.0
    model = RidgeRewardModel(l2=l2).fit(data)
    overall = data.rewards.mean()
    for a in range(data.n_arms):
        r = data.rewards[data.actions == a]
        assert model.coef is not None
        assert model.coef[a, 0] == pytest.approx(
            (r.sum() + l2 * overall) / (r.size + l2), abs=1e-12
        )


def test_unseen_arms_fall_back_to_the_pooled_fit():
    data = logged(3)
    keep = data.actions != 2
    seen = LoggedData(
        arm_ids=data.arm_ids,
        actions=data.actions[keep],
        rewards=data.rewards[keep],
        pscores=data.pscores[keep],
        contexts=data.contexts[keep] if data.contexts is not None else None,
    )
    model = RidgeRewardModel(l2=2.0).fit(seen)
    coef, pooled = naive.ridge_reward_model(seen.contexts, seen.actions, seen.rewards, 4, 2.0)
    assert model.coef is not None
    np.testing.assert_allclose(model.coef[2], pooled, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.coef, coef, rtol=0, atol=1e-9)
    x = np.array([[0.5, -1.0, 2.0]])
    assert model.predict(x, [2])[0] == pytest.approx(pooled @ [1.0, 0.5, -1.0, 2.0], abs=1e-9)


def test_cross_fitted_values_come_from_the_other_folds():
    data = logged(4, n=300)
    model = RidgeRewardModel(l2=1.5, n_folds=3).fit(data)  # folds: row i % 3
    q = model.predict_candidates(data)
    ptr, idx = data.candidates()
    folds = np.arange(data.n_rounds) % 3
    for f in range(3):
        out = folds != f
        assert data.contexts is not None
        coef, _ = naive.ridge_reward_model(
            data.contexts[out], data.actions[out], data.rewards[out], 4, 1.5
        )
        for i in np.flatnonzero(~out)[:20]:
            z = np.concatenate([[1.0], data.contexts[i]])
            lo, hi = ptr[i], ptr[i + 1]
            np.testing.assert_allclose(q[lo:hi], coef[idx[lo:hi]] @ z, rtol=0, atol=1e-9)
    # other data (even equal) is served by the model fitted on every row
    full = RidgeRewardModel(l2=1.5).fit(data).predict_candidates(data)
    np.testing.assert_allclose(model.predict_candidates(dataclasses.replace(data)), full)


@pytest.mark.parametrize("cls", [RidgeRewardModel, LogisticRewardModel])
def test_rounds_asked_in_pieces_are_the_whole_logs_values(cls):
    data = logged(6, n=300)
    model = cls(n_folds=3).fit(data, np.random.default_rng(2))  # cross-fitted on data
    whole = model.predict_candidates(data)
    cuts = [0, 1, 64, 65, 200, 300]
    pieces = [model.predict_candidates(data, a, b) for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert model.predict_candidates(data, 40, 40).shape == (0,)
    for lo, hi in [(-1, 5), (5, 4), (0, 301)]:
        with pytest.raises(InvalidInputError, match=r"outside the log's 0:300"):
            model.predict_candidates(data, lo, hi)


def test_a_rounds_cross_fitted_value_does_not_depend_on_its_reward():
    data = logged(5, n=300)
    ptr, _ = data.candidates()
    base = RidgeRewardModel(n_folds=4).fit(data, np.random.default_rng(9))
    q0 = base.predict_candidates(data)
    i = 17
    flipped = data.rewards.copy()
    flipped[i] = 1.0 - flipped[i]
    other = dataclasses.replace(data, rewards=flipped)
    model = RidgeRewardModel(n_folds=4).fit(other, np.random.default_rng(9))
    q1 = model.predict_candidates(other)
    own = slice(ptr[i], ptr[i + 1])
    np.testing.assert_allclose(q1[own], q0[own], rtol=0, atol=1e-12)  # total − fold moments
    assert np.abs(q1 - q0).max() > 1e-4  # the other folds' rows did learn the change
    in_sample = RidgeRewardModel().fit(other).predict_candidates(other)
    assert (
        np.abs(in_sample[own] - RidgeRewardModel().fit(data).predict_candidates(data)[own]).max()
        > 1e-4
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RidgeRewardModel(l2=0.0), r"l2 = 0.0: expected a finite number > 0"),
        (lambda: RidgeRewardModel(l2=float("nan")), r"l2 = nan"),
        (lambda: RidgeRewardModel(l2="1"), r"l2 = '1'"),  # type: ignore[arg-type]
        (lambda: RidgeRewardModel().fit(logged().take(0, 0)), r"cannot fit on 0 rounds over 4"),
        (lambda: RidgeRewardModel(n_folds=0), r"n_folds = 0: expected an integer >= 1"),
        (lambda: RidgeRewardModel(n_folds=2.0), r"n_folds = 2.0"),  # type: ignore[arg-type]
        (lambda: RidgeRewardModel(n_folds=500).fit(logged()), r"n_folds = 500 exceeds the 400"),
        (lambda: RidgeRewardModel().predict(None, [0]), r"not fitted: call fit\(data\) first"),
        (
            lambda: RidgeRewardModel().fit(logged()).predict(np.zeros((1, 2)), [0]),
            r"contexts has shape \(1, 2\), expected \(1, 3\)",
        ),
        (
            lambda: RidgeRewardModel().fit(logged()).predict(None, [0]),
            r"contexts is required: the reward model uses 3 features",
        ),
        (
            lambda: RidgeRewardModel().fit(logged()).predict(np.zeros((1, 3)), [4]),
            r"arms must be arm indices in \[0, 4\); first bad entries \[0\]: \[4\]",
        ),
        (
            lambda: RidgeRewardModel().fit(logged()).predict(np.zeros((1, 3)), [0.5]),
            r"arms must be a 1-d integer array, got float64 \(1,\)",
        ),
        (
            lambda: (
                RidgeRewardModel()
                .fit(dataclasses.replace(logged(), contexts=None))
                .predict(np.zeros((1, 3)), [0])
            ),
            r"contexts given, but the reward model was fitted without",
        ),
        (
            lambda: (
                RidgeRewardModel()
                .fit(logged())
                .predict_candidates(
                    dataclasses.replace(logged(), arm_ids=("a", "b", "c", "d", "e"))
                )
            ),
            r"data has 5 arms, the reward model was fitted on 4",
        ),
        (
            lambda: RidgeRewardModel().fit(logged()).predict(np.full((1, 3), np.inf), [0]),
            r"contexts must be finite; first bad rows \[0\]",
        ),
        (
            lambda: RidgeRewardModel().fit(
                dataclasses.replace(logged(), rewards=np.full(400, np.nan))
            ),
            r"rewards must be finite; first bad rows \[0, 1, 2, 3, 4\]",
        ),
        (
            lambda: RidgeRewardModel().fit(
                dataclasses.replace(logged(), actions=np.full(400, 7, dtype=np.int64))
            ),
            r"actions must be arm indices in \[0, 4\)",
        ),
    ],
)
def test_invalid_inputs(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


@pytest.mark.parametrize("contextual", [True, False])
def test_logistic_fit_matches_a_scipy_reference_and_stays_in_range(contextual):
    from allocator.kernels.ope import INTERCEPT_L2
    from allocator.replay.reward_model import LogisticRewardModel

    data = logged(6, n=500)
    if not contextual:
        data = dataclasses.replace(data, contexts=None)
    model = LogisticRewardModel(l2=2.0).fit(data)
    x = np.empty((500, 0)) if data.contexts is None else data.contexts
    coef, _ = naive.logistic_reward_model(x, data.actions, data.rewards, 4, 2.0, INTERCEPT_L2)
    np.testing.assert_allclose(model.coef, coef, rtol=0, atol=1e-4)
    q = model.predict_candidates(data)
    assert q.min() > 0.0 and q.max() < 1.0
    again = LogisticRewardModel(l2=2.0, n_folds=3).fit(data, np.random.default_rng(4))
    same = LogisticRewardModel(l2=2.0, n_folds=3).fit(data, np.random.default_rng(4))
    np.testing.assert_array_equal(again.predict_candidates(data), same.predict_candidates(data))


def test_ridge_predictions_are_clipped_to_the_declared_range_and_rewards_checked():
    data = logged(7)
    raw = RidgeRewardModel(l2=0.1).fit(data).predict_candidates(data)
    assert raw.min() < 0.0  # a linear model leaves the click range
    clipped = RidgeRewardModel(l2=0.1, reward_range=(0, 1)).fit(data).predict_candidates(data)
    np.testing.assert_array_equal(clipped, np.clip(raw, 0.0, 1.0))
    with pytest.raises(InvalidInputError, match=r"rewards must be in reward_range \[0.0, 0.5\]"):
        RidgeRewardModel(reward_range=(0, 0.5)).fit(data)
    with pytest.raises(InvalidInputError, match=r"reward_range = \(1, 0\): expected finite low"):
        RidgeRewardModel(reward_range=(1, 0))


@pytest.mark.parametrize("n_folds", [1, 3])
def test_a_context_free_logistic_fit_from_counts_is_the_row_by_row_fit(n_folds):
    """Without contexts the fit reads each arm's row count and reward sum; it is the
    row-by-row Newton fit (the general kernel) up to rounding, fold by fold, and its
    per-arm predictions are the general path's values."""
    from allocator.kernels import ope as kope
    from allocator.replay import reward_model as rm

    data = dataclasses.replace(logged(8, n=700), contexts=None)
    model = rm.LogisticRewardModel(l2=1.5, n_folds=n_folds).fit(data, np.random.default_rng(2))
    folds = model._folds if n_folds > 1 else np.zeros(700, dtype=np.int64)
    y = np.asarray(data.rewards, dtype=np.float64)
    stack = [model.coef] if n_folds == 1 else [model.coef, *model._fold_coef]
    for m, coef in enumerate(stack):
        ref = np.empty_like(coef)
        include = np.ones(700, dtype=np.bool_) if m == 0 else folds != m - 1
        kope.logistic_fit(np.empty((700, 0)), data.actions, y, include, 1.5,
                          rm.LOGISTIC_MAX_ITER, rm.LOGISTIC_TOL, ref, np.empty(1))  # fmt: skip
        np.testing.assert_allclose(coef, ref, rtol=0, atol=1e-12)
    ptr, idx = data.candidates()
    linear = np.empty(idx.shape[0])
    kope.predict_csr(
        np.empty((700, 0)), ptr, idx, np.zeros(700, dtype=np.int64), model.coef[None], linear
    )
    other = dataclasses.replace(data, rewards=data.rewards.copy())  # not the fitted data
    np.testing.assert_array_equal(model.predict_candidates(other), model._output(linear))
