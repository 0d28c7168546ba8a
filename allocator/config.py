"""Validated configuration of the learning policy and the reward objective.

Every model is frozen and forbids unknown keys, so a typo in a YAML file is an error
rather than a silently ignored setting. Cross-field rules live in a few
``model_validator``s that reject bad input and never rewrite it. Deployment settings
(tracking URI, Ray address) are not science configuration and do not live here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from allocator.config_files import load_yaml as load_yaml  # configs are read through here
from allocator.errors import ConfigError, brief

PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
GroupName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

RULE_CODES: dict[str, int] = {"thompson": 0, "ucb": 1, "greedy": 2}


if TYPE_CHECKING:  # the checker needs the class; at run time it is BaseModel's metaclass
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMeta
else:
    _ModelMeta = type(BaseModel)


class _TypedErrors(_ModelMeta):
    """Constructing a config directly (``BetaBernoulliConfig(epsilon=2)``) raises
    :class:`ConfigError`, the public boundary's error, instead of pydantic's
    ``ValidationError``. Only the direct call is wrapped: ``model_validate`` and nested
    fields keep pydantic's own error, which :func:`parse_config` formats."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, cls.__name__)) from None


class StrictModel(BaseModel, metaclass=_TypedErrors):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BetaPrior(StrictModel):
    """Beta(alpha, beta) prior on a Bernoulli success rate."""

    alpha: PositiveFloat = 1.0
    beta: PositiveFloat = 1.0


class NormalGammaPrior(StrictModel):
    """Normal–Gamma prior on (mean, precision) of a real-valued reward."""

    mean: FiniteFloat = 0.0
    kappa: PositiveFloat = 1.0
    alpha: PositiveFloat = 1.0
    beta: PositiveFloat = 1.0


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
    refresh_every: Annotated[int, Field(ge=1)] = 64
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
    """One weight vector over vec(arm features ⊗ context), shared by every arm."""

    USES_ARM_FEATURES: ClassVar[bool] = True
    n_context_features: Annotated[int, Field(ge=1, le=256)]
    n_arm_features: Annotated[int, Field(ge=1, le=256)]

    @model_validator(mode="after")
    def _joint_size(self) -> _Shared:
        joint = self.n_context_features * self.n_arm_features
        if joint > 4096:
            raise ValueError(
                f"n_context_features*n_arm_features = {joint} exceeds 4096 "
                "(the shared model keeps a dense joint precision matrix)"
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
    The bank's first ``n_arm_features`` rows feed the draw, so
    ``max_candidates`` must be at least ``n_arm_features``."""

    sampling: Literal["marginal", "joint"] = "marginal"

    @model_validator(mode="after")
    def _bank_fits_draw(self) -> _JointSampling:
        slots = getattr(self, "max_candidates", 0)
        width = getattr(self, "n_arm_features", 0)
        if self.sampling == "joint" and slots < width:
            raise ValueError(
                f"sampling='joint' needs max_candidates >= n_arm_features, got "
                f"max_candidates={slots} < n_arm_features={width}"
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
    """

    kind: Literal["logistic"] = "logistic"
    exploration_scale: PositiveFloat = 0.35


class SharedLogisticConfig(_JointSampling, _Shared, _LogisticBase):
    """One logistic model over (arm features ⊗ user context): binary rewards, large catalogues."""

    kind: Literal["shared_logistic"] = "shared_logistic"


class HybridLinearConfig(_Hybrid, _LinearBase):
    """Shared linear model plus a per-arm offset (hybrid LinUCB's form, sampled)."""

    kind: Literal["hybrid_linear"] = "hybrid_linear"


class HybridLogisticConfig(_Hybrid, _LogisticBase):
    """Shared logistic model plus a per-arm logit offset: binary rewards, large catalogues."""

    kind: Literal["hybrid_logistic"] = "hybrid_logistic"


class ObjectiveConfig(StrictModel):
    """Reward = click·w_click + order·w_order + gmv·take_rate[group]·w_gmv.

    Partners pay a revenue share and Mini Shop merchants a commission: both are the
    ``take_rates`` of their group; groups not listed use ``default_take_rate``.
    """

    click: FiniteFloat = 0.0
    order: FiniteFloat = 1.0
    gmv: FiniteFloat = 0.0
    take_rates: dict[GroupName, Probability] = Field(default_factory=dict)
    default_take_rate: Probability = 0.0

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveConfig:
        if self.click == 0.0 and self.order == 0.0 and self.gmv == 0.0:
            raise ValueError("objective weights click, order and gmv are all 0: nothing to learn")
        return self


class FactoredValueConfig(_Shared, _FeatureBase):
    """``value = P(click) · P(order | click) · E[value | order]``: two shared logistic models
    and a shared regression of the log order value, each learned where its event is observed,
    their product sampled (``kernels.factored``); it learns from outcomes, not rewards.

    ``objective`` values an outcome as the engine's (which must be the same); the log-value
    regression is centred on ``typical_order_value``, and ``value_log_sd`` is the prior guess
    of the log order value's sd (worth two orders).
    """

    kind: Literal["factored_value"] = "factored_value"
    objective: ObjectiveConfig = ObjectiveConfig()
    exploration_scale: PositiveFloat = 1.0
    typical_order_value: PositiveFloat = 100.0
    value_log_sd: PositiveFloat = 1.0

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


class EngineConfig(StrictModel):
    """A policy plus the objective that turns outcomes into its reward."""

    policy: PolicyConfig
    objective: ObjectiveConfig = ObjectiveConfig()

    @model_validator(mode="after")
    def _bernoulli_rewards(self) -> EngineConfig:
        o = self.objective
        if self.policy.BERNOULLI_REWARDS and (
            o.gmv != 0.0 or min(o.click, o.order) < 0.0 or o.click + o.order > 1.0
        ):
            raise ValueError(
                f"policy {self.policy.kind} learns rewards in [0, 1]: the objective must weigh "
                f"click and order with non-negative weights summing to at most 1 and gmv 0 "
                f"(got click={o.click}, order={o.order}, gmv={o.gmv}); use normal_gamma or a "
                "linear policy for revenue"
            )
        if isinstance(self.policy, FactoredValueConfig) and self.policy.objective != o:
            raise ValueError(
                "policy factored_value values outcomes with its own objective, which must "
                "equal engine.objective (the reward logged and reported): set both alike"
            )
        return self


def check_known_groups(where: str, names: Iterable[str], groups: Collection[str]) -> None:
    """Raise ``ValueError`` naming the ``names`` that are not among ``groups`` (a typo in a
    group-keyed mapping would otherwise fall back to the defaults silently)."""
    unknown = sorted(set(names) - set(groups))
    if unknown:
        raise ValueError(
            f"{where}: unknown groups {_listed(unknown)}; known groups: {_listed(sorted(groups))}"
        )


def _listed(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(brief(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


def check_group_names(engine: EngineConfig, groups: Collection[str]) -> None:
    """:func:`check_known_groups` for every group-keyed mapping of ``engine``."""
    check_known_groups(
        "engine.policy.group_priors", getattr(engine.policy, "group_priors", {}), groups
    )
    check_known_groups("engine.objective.take_rates", engine.objective.take_rates, groups)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = item.get("input")
        shown = brief(got) if not isinstance(got, dict) else "{...}"
        lines.append(f"  {where}: {item['msg']} (got {shown})")
    return "\n".join(lines)


def parse_config(model: type[StrictModel], data: Any, source: str = "<dict>") -> Any:
    """Validate ``data`` as ``model``; raise :class:`ConfigError` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_engine_config(path: str | Path) -> EngineConfig:
    """Load and validate an :class:`EngineConfig` from a YAML file."""
    cfg: EngineConfig = parse_config(EngineConfig, load_yaml(path), str(path))
    return cfg
