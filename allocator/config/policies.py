"""Validated configuration of the learning policy: one model per posterior family, a
discriminated union on ``kind``.

Cross-field rules live in a few ``model_validator``s that reject bad input and never
rewrite it.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from allocator.config.base import FiniteFloat, GroupName, PositiveFloat, StrictModel
from allocator.config.objective import ObjectiveConfig

RULE_CODES: dict[str, int] = {"thompson": 0, "ucb": 1, "greedy": 2}


#: range of a prior's pseudo-counts (Beta's alpha and beta, Normal–Gamma's kappa and
#: alpha): beyond it the posterior's moments underflow or overflow in double precision
PRIOR_COUNTS = (1e-6, 1e12)
#: range of the Normal–Gamma prior's scale ``beta`` (units of reward²)
PRIOR_SCALE = (1e-30, 1e30)
PriorCount = Annotated[float, Field(ge=PRIOR_COUNTS[0], le=PRIOR_COUNTS[1], allow_inf_nan=False)]


class BetaPrior(StrictModel):
    """Beta(alpha, beta) prior on a Bernoulli success rate (pseudo-counts in
    :data:`PRIOR_COUNTS`)."""

    alpha: PriorCount = 1.0
    beta: PriorCount = 1.0


class NormalGammaPrior(StrictModel):
    """Normal–Gamma prior on (mean, precision) of a real-valued reward (``kappa`` and
    ``alpha`` in :data:`PRIOR_COUNTS`, ``beta`` in :data:`PRIOR_SCALE`)."""

    mean: FiniteFloat = 0.0
    kappa: PriorCount = 1.0
    alpha: PriorCount = 1.0
    beta: Annotated[float, Field(ge=PRIOR_SCALE[0], le=PRIOR_SCALE[1], allow_inf_nan=False)] = 1.0


class LinearPrior(StrictModel):
    """Gaussian prior mean of a group's weight vector (precision is the policy's)."""

    mean: list[FiniteFloat]


class _PolicyBase(StrictModel):
    """Settings shared by every posterior family.

    ``rule`` picks how the posterior becomes a choice: Thompson sampling through the
    sample bank, an upper confidence bound (``mean + ucb_alpha * sd``), or greedy on the
    mean. ``epsilon`` mixes a uniform share over the request's candidates into every rule,
    so that no eligible arm ever has probability zero (off-policy evaluation needs it).
    ``max_abs_input`` bounds every context and arm-feature value and ``max_abs_reward``
    every reward: finite numbers beyond them are refused, so that squares and sums in the
    posterior stay finite.
    """

    #: a family whose rewards are Bernoulli (click, order) sets True: rewards in [0, 1]
    BERNOULLI_REWARDS: ClassVar[bool] = False
    #: a shared model (arm features ⊗ context) sets True: arms carry feature vectors
    USES_ARM_FEATURES: ClassVar[bool] = False

    rule: Literal["thompson", "ucb", "greedy"] = "thompson"
    epsilon: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.01
    ucb_alpha: PositiveFloat = 1.0
    discount: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    half_life: PositiveFloat | None = None
    bank_rows: Annotated[int, Field(ge=1, le=65536)] = 256
    bank_max_cells: Annotated[int, Field(ge=1024)] = 1 << 24
    refresh_every: Annotated[int, Field(ge=1, le=1 << 40)] = 64
    new_arm_prior: Literal["configured", "empirical"] = "configured"
    max_abs_input: Annotated[float, Field(gt=0.0, le=1e12, allow_inf_nan=False)] = 1e6
    max_abs_reward: Annotated[float, Field(gt=0.0, le=1e15, allow_inf_nan=False)] = 1e9

    @model_validator(mode="after")
    def _one_forgetting_knob(self) -> _PolicyBase:
        if self.discount is not None and self.half_life is not None:
            raise ValueError(
                f"set either discount ({self.discount}) or half_life ({self.half_life}), not both"
            )
        return self

    @property
    def gamma(self) -> float:
        """Per-update decay factor of sufficient statistics (1.0 = no forgetting)."""
        if self.half_life is not None:
            return math.pow(0.5, 1.0 / self.half_life)
        return 1.0 if self.discount is None else self.discount

    @property
    def rule_code(self) -> int:
        return RULE_CODES[self.rule]

    @property
    def context_size(self) -> int | None:
        """Length of the context a request carries (None: a context-free family)."""
        return None

    @property
    def arm_feature_size(self) -> int | None:
        """Length of an arm's feature vector (None: arms carry no features)."""
        return None


class BetaBernoulliConfig(_PolicyBase):
    """Beta–Bernoulli posterior per arm: rewards in [0, 1] (click, order)."""

    BERNOULLI_REWARDS: ClassVar[bool] = True
    kind: Literal["beta_bernoulli"] = "beta_bernoulli"
    prior: BetaPrior = BetaPrior()
    group_priors: dict[GroupName, BetaPrior] = Field(default_factory=dict)


class NormalGammaConfig(_PolicyBase):
    """Normal–Gamma posterior per arm: real rewards with unknown variance (GMV, revenue)."""

    kind: Literal["normal_gamma"] = "normal_gamma"
    prior: NormalGammaPrior = NormalGammaPrior()
    group_priors: dict[GroupName, NormalGammaPrior] = Field(default_factory=dict)


class _FeatureBase(_PolicyBase):
    """Settings of the feature-based (Gaussian-posterior) families.

    ``score_scale`` is the factor on the posterior sd of a candidate's score when sampling
    or bounding (the linear models' ``noise_scale``, the logistic ones' ``exploration_scale``).
    """

    prior_precision: PositiveFloat = 1.0
    max_candidates: Annotated[int, Field(ge=1, le=100_000)] = 1024

    @property
    def score_scale(self) -> float:
        raise NotImplementedError


class _LinearBase(_FeatureBase):
    noise_scale: PositiveFloat = 0.5

    @property
    def score_scale(self) -> float:
        return self.noise_scale


class _LogisticBase(_FeatureBase):
    """Binary rewards through a logistic link; the posterior is the online Laplace one,
    so ``exploration_scale`` = 1 samples it as it is."""

    BERNOULLI_REWARDS: ClassVar[bool] = True
    exploration_scale: PositiveFloat = 1.0

    @property
    def score_scale(self) -> float:
        return self.exploration_scale


class _Disjoint(StrictModel):
    """One d-dimensional weight vector per arm, with optional per-group prior means."""

    n_features: Annotated[int, Field(ge=1, le=512)]
    group_priors: dict[GroupName, LinearPrior] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prior_lengths(self) -> _Disjoint:
        for group, prior in self.group_priors.items():
            if len(prior.mean) != self.n_features:
                raise ValueError(
                    f"group_priors.{group}.mean has length {len(prior.mean)}, "
                    f"expected n_features={self.n_features}"
                )
        return self

    @property
    def context_size(self) -> int | None:
        return self.n_features


class _Shared(StrictModel):
    """One weight vector over vec(arm features ⊗ context), shared by every arm.

    ``arm_intercept`` appends a constant arm feature (1 for every arm) to the
    ``n_arm_features`` an arm is given: its weights are a level every arm shares, learned
    from all traffic, and each group's or merchant's own feature weights (prior mean 0)
    become deviations from it, so a group with little traffic starts at the level the
    others showed instead of at the prior's. Arms are still given ``n_arm_features``
    values; the model holds ``model_arm_features`` (one more) per arm.
    """

    USES_ARM_FEATURES: ClassVar[bool] = True
    n_context_features: Annotated[int, Field(ge=1, le=256)]
    n_arm_features: Annotated[int, Field(ge=1, le=256)]
    arm_intercept: bool = False

    @property
    def model_arm_features(self) -> int:
        """Arm features the model holds: the given ones, then the intercept if any."""
        return self.n_arm_features + int(self.arm_intercept)

    @model_validator(mode="after")
    def _joint_size(self) -> _Shared:
        joint = self.n_context_features * self.model_arm_features
        if joint > 4096:
            raise ValueError(
                f"n_context_features*n_arm_features = {joint} (the intercept included) "
                "exceeds 4096 (the shared model keeps a dense joint precision matrix)"
            )
        return self

    @property
    def context_size(self) -> int | None:
        return self.n_context_features

    @property
    def arm_feature_size(self) -> int | None:
        return self.n_arm_features


class _JointSampling(StrictModel):
    """How Thompson sampling draws the shared model's scores.

    ``marginal`` draws each candidate's score from its own marginal: candidates that share
    most of their features (merchants of one group and category) then get independent
    chances to look best, and a crowd of them wins far more often than the model believes
    any one of them should. ``joint`` draws the model (its weights folded with the
    context) once per bank row and scores every candidate with that draw, which is
    Thompson sampling proper; it costs O(d_arm) per candidate and bank row instead of O(1).
    The bank's first ``model_arm_features`` rows feed the draw, so
    ``max_candidates`` must be at least that."""

    sampling: Literal["marginal", "joint"] = "marginal"

    @model_validator(mode="after")
    def _bank_fits_draw(self) -> _JointSampling:
        slots = getattr(self, "max_candidates", 0)
        width = getattr(self, "model_arm_features", 0)
        if self.sampling == "joint" and slots < width:
            plus = " + 1 (the intercept)" if getattr(self, "arm_intercept", False) else ""
            raise ValueError(
                f"sampling='joint' needs max_candidates >= n_arm_features{plus}, got "
                f"max_candidates={slots} < {width}"
            )
        return self


class OffsetPrior(StrictModel):
    """Prior of an arm's own offset in a hybrid model: the group's mean offset and the
    between-arm sd (None: the policy's ``offset_sd``)."""

    mean: FiniteFloat = 0.0
    sd: PositiveFloat | None = None


class _Hybrid(_Shared):
    """The shared model plus one offset per arm, shrunk toward its group's prior.

    ``offset_sd`` is the between-arm sd of the offsets in units of the noise (score units
    over ``noise_scale`` for ``hybrid_linear``, logits for ``hybrid_logistic``), the prior
    a new arm starts from; ``group_priors`` sets a group's mean offset and sd. With
    ``learn_offset_sd`` each refresh takes one EM step on every group's between-arm
    variance from its observed arms' offset posteriors, starting from the configured sd.
    """

    offset_sd: PositiveFloat = 0.5
    learn_offset_sd: bool = False
    group_priors: dict[GroupName, OffsetPrior] = Field(default_factory=dict)


class LinearGaussianConfig(_Disjoint, _LinearBase):
    """Disjoint linear Gaussian model: one d-dim ridge posterior per arm."""

    kind: Literal["linear_gaussian"] = "linear_gaussian"


class SharedLinearConfig(_JointSampling, _Shared, _LinearBase):
    """One linear model over (arm features ⊗ user context), for large catalogues."""

    kind: Literal["shared_linear"] = "shared_linear"


class LogisticConfig(_Disjoint, _LogisticBase):
    """Disjoint logistic (GLM) model: one d-dim Laplace posterior per arm, rewards in [0, 1].

    Sampling the posterior as it is over-explores: 0.35 of its sd lost 18–39 % less regret
    than 1 on six of seven simulated workloads, 3 % more on the seventh (d = 32, where the
    unit prior is far too wide), three seeds each (benchmarks/README.md).

    ``refit_buffer`` > 0 keeps each arm's last that many observations and, at every
    refresh, refits the arms updated since to the exact MAP of those observations (older
    ones stay as their online factor): the online linearisation errs most while an arm is
    young. It costs ``refit_buffer·(d + 3)`` floats per arm and O(refit_buffer·d²) per
    refitted arm and refresh.
    """

    kind: Literal["logistic"] = "logistic"
    exploration_scale: PositiveFloat = 0.35
    refit_buffer: Annotated[int, Field(ge=0, le=4096)] = 0


class SharedLogisticConfig(_JointSampling, _Shared, _LogisticBase):
    """One logistic model over (arm features ⊗ user context): binary rewards, large catalogues."""

    kind: Literal["shared_logistic"] = "shared_logistic"


class HybridLinearConfig(_Hybrid, _LinearBase):
    """Shared linear model plus a per-arm offset (hybrid LinUCB's form, sampled)."""

    kind: Literal["hybrid_linear"] = "hybrid_linear"


class HybridLogisticConfig(_Hybrid, _LogisticBase):
    """Shared logistic model plus a per-arm logit offset: binary rewards, large catalogues."""

    kind: Literal["hybrid_logistic"] = "hybrid_logistic"


class FactoredValueConfig(_Hybrid, _FeatureBase):
    """``value = P(click) · P(order | click) · E[value | order]``: two logistic models and a
    regression of the log order value, each learned where its event is observed, their
    product sampled (``kernels.factored``); it learns from outcomes, not rewards.

    ``objective`` values an outcome as the engine's (which must be the same); the log-value
    regression is centred on ``typical_order_value``, and ``value_log_sd`` is the prior guess
    of the log order value's sd (worth two orders). ``click_model: hybrid`` gives the click
    factor a per-arm logit offset shrunk toward its group (``hybrid_logistic``'s model and
    its ``offset_sd``, ``learn_offset_sd`` and ``group_priors``): clicks are the one event
    frequent enough to show a merchant's own quality; the order and value stay shared.

    The log-value weights' prior is ``N(0, σ²·P⁻¹)`` (0 is the informed guess: the
    regression is centred on ``typical_order_value``). ``value_prior_precision`` sets ``P``'s
    scale (default ``prior_precision``); with ``value_prior: balanced`` the weights of arm
    feature ``i`` get that precision times the largest squared feature norm among the arms
    that use it (at least 1), so no candidate's prior log-value score variance exceeds
    ``σ²·‖x‖² / value_prior_precision`` whatever its number of features: a merchant with
    five non-zero features is not a priori five times as uncertain as a partner with one,
    and Thompson sampling does not favour it for that. Setting ``value_prior_precision`` to
    the contexts' ``‖x‖²`` (the number of one-hot blocks they hold) makes that bound
    ``σ²``: a candidate's mean log value is not a priori further from the typical order
    value than one order's spread (the between-candidate variance is part of the total).

    ``factor_prior: balanced`` applies the same rule to the click and order logits' weights
    (precision ``prior_precision`` times each arm feature's reach), so no candidate's prior
    logit variance exceeds ``‖x‖² / prior_precision``: with the flat prior a merchant's
    click and order logits were a priori several times as uncertain as a partner's, and a
    wide logit draw lands near 1 often enough to win. One switch for both: they are the
    same kind of model on the same logit scale and the rule has no setting of its own.
    ``typical_conversion`` is the user's statement of a typical shop's ``P(order | click)``;
    the order logit is centred on it (a fixed offset in the link, so the weights' prior
    stays at 0 and the update and propensities stay exact). Unset, it is 1/2 (logit 0).

    ``arm_feature_prior_scale`` maps an arm feature's index to a multiplier of its weights'
    prior precision (every context cross term, in the click, order and value factors,
    after the flat or balanced rule): below 1 a feature's weights are freer to move. With
    a constant arm feature every arm shares (a common level), the group one-hots' weights
    are each group's deviation from that level; a scale below 1 on them lets a group's
    level leave the others' sooner. Empty (the default), every prior is as configured.

    ``crosses`` declares which context columns an arm feature's weights cross with, as
    Vowpal Wabbit's ``--interactions`` do: ``{arm feature index: [context column indices]}``;
    a feature not named crosses with every column (the default, ``{}``: every pair). A pair
    left out is held at 0 in the three factors: its prior precision is multiplied by
    :data:`allocator.policies.factored.PIN` (10⁶), so its weight moves less than a
    millionth of what the data would move it, and adds no spread to any draw. A model
    with every pair learns weights its data cannot pin down where the world has no such
    effect (a merchant's rating by city tier, say), and those errors rank merchants
    wrongly: on the bundled scenario keeping the 62 pairs of 180 its world has earned
    +2.67 points of the oracle [+2.06, +3.28] over 12 cells with 12 % less regret in the
    first two weeks (``experiments/static_world``). Left-out pairs still take memory and
    time.
    """

    kind: Literal["factored_value"] = "factored_value"
    objective: ObjectiveConfig = ObjectiveConfig()
    exploration_scale: PositiveFloat = 1.0
    typical_order_value: PositiveFloat = 100.0
    value_log_sd: PositiveFloat = 1.0
    click_model: Literal["shared", "hybrid"] = "shared"
    value_prior: Literal["flat", "balanced"] = "flat"
    value_prior_precision: PositiveFloat | None = None
    factor_prior: Literal["flat", "balanced"] = "flat"
    typical_conversion: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    arm_feature_prior_scale: dict[Annotated[int, Field(ge=0)], PositiveFloat] = Field(
        default_factory=dict
    )
    crosses: dict[Annotated[int, Field(ge=0)], list[Annotated[int, Field(ge=0)]]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _scaled_features_exist(self) -> FactoredValueConfig:
        width = self.model_arm_features  # the intercept, if any, is the last index
        bad = sorted(i for i in self.arm_feature_prior_scale if i >= width)
        if bad:
            raise ValueError(
                f"arm_feature_prior_scale names arm feature {bad[0]}, but the model has "
                f"{width} arm features (indices 0..{width - 1}, the intercept included)"
            )
        return self

    @model_validator(mode="after")
    def _crosses_exist(self) -> FactoredValueConfig:
        width, dc = self.model_arm_features, self.n_context_features
        for i, columns in sorted(self.crosses.items()):
            if i >= width:
                raise ValueError(
                    f"crosses names arm feature {i}, but the model has {width} arm features "
                    f"(indices 0..{width - 1}, the intercept included)"
                )
            if any(q >= dc for q in columns) or len(set(columns)) != len(columns):
                raise ValueError(
                    f"crosses[{i}] = {columns}: context columns must be distinct indices in "
                    f"0..{dc - 1}"
                )
        return self

    @model_validator(mode="after")
    def _offsets_need_the_hybrid_click(self) -> FactoredValueConfig:
        # non-default values only: a dumped config (a snapshot's) repeats the defaults
        fields = type(self).model_fields
        given = [
            name for name in ("group_priors", "learn_offset_sd", "offset_sd")
            if getattr(self, name) != fields[name].get_default(call_default_factory=True)
        ]  # fmt: skip
        if self.click_model == "shared" and given:
            raise ValueError(
                f"{', '.join(given)} set with click_model='shared': the per-arm offsets "
                "exist only with click_model='hybrid'"
            )
        return self

    @property
    def score_scale(self) -> float:
        return self.exploration_scale


PolicyConfig = Annotated[
    BetaBernoulliConfig
    | NormalGammaConfig
    | LinearGaussianConfig
    | SharedLinearConfig
    | LogisticConfig
    | SharedLogisticConfig
    | HybridLinearConfig
    | HybridLogisticConfig
    | FactoredValueConfig,
    Field(discriminator="kind"),
]
