"""NumPy-only math: the Measurement record, stiffness, distances, and Gram matrices to summaries.

Never imports TensorFlow, Keras or h5py (a test enforces it), so it is cheap to import and easy to test.
"""
