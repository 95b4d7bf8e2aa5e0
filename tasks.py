"""kernlab command line: `invoke --list`. Each task parses flags and calls kernlab."""

from __future__ import annotations

import functools
import json
import sys

from invoke import Collection, Exit, task

from kernlab.errors import KernlabError


def friendly(func):
    """Turn a KernlabError into its details, then one line `kernlab: error: cause; fix`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KernlabError as error:
            if error.details:
                print(error.details, file=sys.stderr)
            raise Exit(f"kernlab: error: {error.one_line()}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("kernlab: interrupted", code=130) from None

    return wrapper


# ---------------------------------------------------------------- host setup
@task(help={"dry_run": "Only print the packages that would be installed."})
@friendly
def setup(c, dry_run=False):
    """Install the host packages kernlab needs (idempotent; says what it installs)."""
    from kernlab.hostdeps import setup_host

    setup_host(dry_run=dry_run)


# ---------------------------------------------------------------- kernels
# (build-kernel, kernel-info, list-kernels: see below)

# ---------------------------------------------------------------- image and VM
# (build-image, vm.*: see below)

# ---------------------------------------------------------------- experiments
# (run-experiment, list-experiments: see below)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


ns = Collection(setup)
