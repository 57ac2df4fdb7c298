"""The ``kstiff`` command line (installed as ``keras_stiffness.cli``; entry point ``main.main``)."""
