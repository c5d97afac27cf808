"""What runs on a tested host: takes a batch of scenarios, runs each, answers with observations.

Everything under probe/ uses the standard library only, because it is shipped to hosts as a zip and
run by whatever python3 the host has. The controller side lives in conformance/transport.py.
"""
