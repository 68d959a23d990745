"""Benchmarks for dit-video: per-kernel and end-to-end, against the peers, with the roofline beside.

Run from the repository root (this directory is not installed)::

    python -m benchmarks {kernels,e2e,data,all} [--device cpu|cuda] [--dtype ...] [--quick] [--out DIR]

or ``dit-video bench ...`` (the same command). Every suite returns JSON rows; see ``results/README.md``
for how to read them. Backends that are not available on the device are reported as rows with
``status="absent"`` and the reason, never faked.
"""
