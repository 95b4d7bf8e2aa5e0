"""`invoke lock`: pinning kernels and images in ``kernlab.lock`` from the builds and images
that exist (``built``). The lock file's format and checks are ``kernlab.core.lock``."""
