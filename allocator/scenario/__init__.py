"""The scenario simulator: the simulated WeChat shopping entry and the strategies compared on it.

``allocator run configs/wechat_entry.yaml`` lands in :func:`allocator.launch.scenario.run_scenario`.
Modules, bottom up: ``world/`` (traffic, arms and their truth), ``config`` (the scenario
YAML), ``strategies`` (baselines, allocator policies, the oracle), ``build`` (config →
strategies and grid cells), ``compliance`` (floors re-measured from what was served),
``emit`` (a cell's decision log), ``simulate`` (one cell), ``report`` (table and plots),
``launch`` (the grid, tracked).
"""
