"""Training: turning a composed job into trained populations.

`train` builds a job's structure and members from its config and writes its result; `engine`
compiles one XLA program per structure and runs the host task loop (`engine.run_tasks`) shared by
every model; `fly` trains FlyModel's non-gradient rule through that loop; `ops` holds the
sparse activations' primitives and `kernels` the optional fused CPU kernels behind them.
"""
