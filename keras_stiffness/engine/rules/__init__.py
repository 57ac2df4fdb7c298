"""Gram rules, one module per layer family, all with the signature of :class:`base.Rule`.

The registry (engine/registry.py) maps layer classes to these rules by an MRO walk.
"""
