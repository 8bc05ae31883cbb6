"""Components: what a job is made of, each kind one registry (`registry.Registry`).

`activations`, `optimizers`, `strategies` and `benchmarks` hold the paper's built-in components as
ordinary registrations through the public decorators (``cl_sweep.register_activation`` ...);
models are registered in `cl_sweep.models`. `plugins` imports users' modules and installed
``cl_sweep.plugins`` entry points before Hydra composes a config.
"""
