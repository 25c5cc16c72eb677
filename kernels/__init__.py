"""entrodec.kernels: Numba CPU and CUDA kernels for the sampling hot path.

Nothing is exported yet: until the kernels land, every processor runs its plain torch implementation
(the reference the kernels will be tested against). See ../shared/specs/kernels.md and issue 4.
"""
