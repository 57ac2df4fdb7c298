"""The exact per-example-gradient Gram engine: capture pass, per-layer rules, jacobian fallback.

The only part of the package that uses TensorFlow's autodiff.
"""
