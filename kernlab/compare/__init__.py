"""Stage 4: comparisons across kernels and runs. Takes experiment names, kernel versions
and existing bundles; gives a matrix (``matrix.json``, ``report.md``, ``junit.xml``),
merged matrices, and a reproduction verdict for a saved bundle.

``matrix`` runs every experiment on every kernel (other machines' share through
``kernlab.fanout``) and writes the report, ``merge`` joins matrices, ``atlas_report``
renders the probe atlas, and ``reproduce`` reruns a bundle's recorded experiment on the
build it names (or a rebuild) and compares.
"""
