"""`invoke new-experiment`: a working experiment folder to start from, one per kind.

The templates live in ``templates/<kind>/`` beside this module, plus ``templates/shared/``
(the workload program) for the kinds that trace a compiled workload; ``{{NAME}}`` becomes
the folder's name. Each passes on the default kernel as generated, and on 4.15 to 6.1.
"""

from __future__ import annotations

from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.util import staging_dir
from kernlab.core.validate import plain_name

TEMPLATES = Path(__file__).with_name("templates")
KINDS = ("bpftrace", "libbpf", "bcc", "shell")
WITH_WORKLOAD = ("bpftrace", "libbpf", "bcc")  # these also get templates/shared/


def target_folder(name: str) -> Path:
    """A bare name goes into the suite's folder; anything with a ``/`` is a path."""
    if "/" in name or name.startswith((".", "~")):
        return Path(name).expanduser().resolve()
    return paths.experiments_dir() / name


def new_experiment(name: str, kind: str) -> Path:
    """Write the ``kind`` skeleton into a new folder; returns it."""
    if kind not in KINDS:
        raise KernlabError(f"--kind {kind!r} is not a kind of experiment",
                           f"give one of: {', '.join(KINDS)}")
    folder = target_folder(name)
    if problem := plain_name(folder.name):
        raise KernlabError(f"cannot name an experiment {folder.name!r}: {problem}",
                           "give a name of letters, digits, '-', '_' and '.'")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise KernlabError(f"{folder} already exists", "give a new folder, or remove that one")
    words = {"{{NAME}}": folder.name, "{{UNDERSCORED}}": folder.name.replace("-", "_").replace(".", "_")}
    sources = list((TEMPLATES / kind).iterdir())
    if kind in WITH_WORKLOAD:
        sources += (TEMPLATES / "shared").iterdir()
    with staging_dir(folder) as stage:
        for source in sorted(sources):
            text = source.read_text()
            for word, value in words.items():
                text = text.replace(word, value)
            (stage / source.name).write_text(text)
        stage.chmod(0o755)
    return folder


def made_text(folder: Path, kind: str) -> str:
    """What `invoke new-experiment` prints: the folder and the next two commands."""
    shown = folder.name if folder.parent == paths.experiments_dir() else str(folder)
    return (f"{folder}: a {kind} experiment that passes as generated\n"
            f"  check it:  invoke check-experiment {shown} --kernels 6.1,4.15\n"
            f"  run it:    invoke run-experiment {shown} --kernel 6.1")
