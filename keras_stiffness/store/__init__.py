"""The HDF5 run file: layout, checks, files and locks, the writer and the reader.

h5py and NumPy only; the format is documented in saved_runs/README.md.
"""
