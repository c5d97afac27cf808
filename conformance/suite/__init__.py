"""The conformance suite: one folder per area, one test per clause, each test reading like its clause.

Run it with `conformance run` or `pytest --pyargs conformance.suite`.
"""
