"""The ground floor every stage stands on; imports nothing else from kernlab.

Takes environment variables (``KERNLAB_ROOT``, ``KERNLAB_WORK``, ``KERNLAB_STATE``,
``KERNLAB_RESULTS``, ``KERNLAB_CACHE``, ``KERNLAB_LOCK``) and gives: where things live
(``paths``), the one error type with a cause and a fix (``errors``) and the task-boundary
crash log (``crash``), logged subprocesses (``proc``), atomic JSON and hashing helpers
(``util``), the typed stage records (``records``), progress events and their front-end
(``progress``), the one YAML loader (``spec``), argument and YAML value checks
(``validate``), the ``kernlab.lock`` file format (``lock``) and Debian host packages
(``hostdeps``).
"""
