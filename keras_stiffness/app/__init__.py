"""The library side of kstiff: paper models, training runs, post-hoc analysis and text reports.

The Click commands in cli/ are thin shells over these functions.
"""
