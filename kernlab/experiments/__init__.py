"""Stage 3: experiments. Takes ``experiments/<name>/experiment.yaml`` (and its programs),
a kernel build and a running guest; gives a results bundle
``<results>/<name>/<kernel>/<time>/`` with ``manifest.json``, ``result.json``, the trace
and the logs.

``spec`` loads and checks the experiment file, ``suite`` finds experiments by name (the
suite and the folders added to it), ``fit`` checks one against a kernel (n/a reasons,
needs), ``expect`` parses and evaluates its expectations, ``build`` compiles its programs
against the kernel, ``run`` drives a run end to end (``Session``: kernel, image, VM; a
suite's ``lanes`` side by side), ``driver`` is the standalone script run on the guest, and
``bundle`` writes the bundle.
"""
