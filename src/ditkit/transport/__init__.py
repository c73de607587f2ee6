"""Flow matching on the DiT backbone, compatible with SiT (Ma et al. 2024, arXiv 2401.08740).

- `settings`: the choices and the stored description of a flow model (no torch);
- `paths`: the interpolants (Linear, GVP, VP) and their closed forms;
- `transport`: `create_transport` and the flow-matching loss;
- `sit_sampler`: SiT's `Sampler` (ODE through torchdiffeq, SDE);
- `solvers`: the named flow solvers (dopri5, euler, heun, sde-euler, sde-heun) of `ditkit sample` and `DiTPipeline`.
"""
