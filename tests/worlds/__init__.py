"""The test-only worlds, in one place: each has a known truth the tests check against.

- `contracts`: partners and Mini Shop merchants driven through the engine's batch entry, with
  per-window contract accounting;
- `logged`: logistic and Bernoulli worlds with known policy values, for the evaluators;
- `scenario`: the library's scenario `World`, built once per test process.
"""
