"""Pure-Python twins of the compiled modules in ``pillion._ext``.

Each module here is the specification of its compiled twin: same names, same
behaviour, checked against each other by the parity tests.
"""
