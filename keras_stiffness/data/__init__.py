"""Data: sources (digits, tfds, npz), labels, and the fixed probe set a measurement runs on.

TensorFlow and tensorflow-datasets are imported only inside the functions that read them.
"""
