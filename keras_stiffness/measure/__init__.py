"""One measurement of a model: the adapter protocol, the validated configuration, the measuring step.

Everything above this room reaches a model only through a StiffnessAdapter.
"""
