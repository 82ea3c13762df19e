"""Every bad input poisonlab was tried with, and the one line it answers.

Each ``cases_*.py`` module holds a list ``CASES`` of :class:`~.harness.Case`; the test
module runs each one and checks the contract (a PoisonlabError subclass or a warning from
the Python API; exit code 2 and one line on stderr from the CLI). docs/bad_inputs.md is
rendered from the same cases (``python -m tests.bad_inputs --write``) and a test keeps it
current, so the table cannot drift from what the code says.
"""
