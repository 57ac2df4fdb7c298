"""The Keras callback that measures stiffness during model.fit, with its schedules and recording.

It wraps a Keras model in a KerasAdapter at the edge and then talks only to the adapter protocol.
"""
