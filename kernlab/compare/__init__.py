"""Stage 4: comparisons across kernels and machines. Takes experiment names, kernel
versions, optionally ``hosts.yaml``, and existing bundles; gives a matrix
(``matrix.json``, ``report.md``, ``junit.xml``), merged matrices, and a reproduction
verdict for a saved bundle.

``matrix`` runs every experiment on every kernel and writes the report, ``fleet`` ships
kernlab to other machines and runs their share of a matrix, ``merge`` joins matrices,
and ``reproduce`` reruns a bundle on the build it names (or a rebuild) and compares;
it also writes ``kernlab.lock`` from the current builds.
"""
