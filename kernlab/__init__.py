"""kernlab: reproducible Linux kernel and eBPF tracing experiments."""

__version__ = "0.1.0"
