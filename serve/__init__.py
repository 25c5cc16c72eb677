"""entrodec.serve: the OpenAI-compatible HTTP server.

Nothing is exported yet (issue 7); the package exists so the layout of DESIGN.md installs as one
distribution.
"""
