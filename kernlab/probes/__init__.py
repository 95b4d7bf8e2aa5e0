"""Probe atlas: can a kprobe, kretprobe, tracepoint or uprobe attach on a built kernel, and if
not, why and what would fix it. Sits between guest and experiments.

``target`` parses what users name, ``elfscan`` reads a build's own outputs (System.map,
vmlinux's ``__mcount_loc`` and kprobe blacklist tables, ``.BTF``, ``.config``), ``dwarf``
finds the callers a function was inlined into, ``source`` reads the build's tree
(``static``/``inline``/``notrace``/``NOKPROBE_SYMBOL``, config gating), ``atlas`` turns the
evidence into verdicts, ``live`` confirms them in a booted guest, and ``probeable`` writes a
patch that makes a static or inlined function a real symbol.
"""
