"""entrodec.search: particle filtering, entropic particle filtering with look-ahead, best-of-N.

Nothing is exported yet (issue 6); the package exists so the layout of DESIGN.md installs as one
distribution.
"""
