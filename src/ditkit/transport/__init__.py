"""Flow matching on the DiT backbone, compatible with SiT (Ma et al. 2024, arXiv 2401.08740).

- `settings`: the choices and the stored description of a flow model (no torch);
- `paths`: the interpolants (Linear, GVP, VP) and their closed forms;
- `transport`: `create_transport` and the flow-matching loss;
- `samplers`: SiT's `Sampler` (ODE through torchdiffeq, SDE);
- `sampling`: the named samplers of `ditkit sample` and `DiTPipeline` for flow models.
"""
