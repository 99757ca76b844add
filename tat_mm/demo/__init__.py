"""The demo's own code (``tools/demo.py``, ``tools/visualize.py``, ``tools/evidence.py``).

Not imported by ``import tat_mm``: the installed library does not depend on it.
"""
