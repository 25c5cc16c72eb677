"""entrodec.train: entropy-controlled RL fine-tuning whose rollouts reuse entrodec's processors.

Nothing is exported yet (issue 8); the package exists so the layout of DESIGN.md installs as one
distribution.
"""
