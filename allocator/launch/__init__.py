"""Running grids of experiment cells (sequentially or on Ray) and tracking them in MLflow.

Nothing here imports Ray or MLflow at module import; the runner and the tracker do, when
used, and only on the driver.
"""
