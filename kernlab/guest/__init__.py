"""Stage 2: guests. Takes a build record (its bzImage) and an image recipe under ``vm/``;
gives a Debian disk image (``<state>/images/<recipe>-<key12>/image.json``, the image
record), a running QEMU guest (``<state>/vms/<name>/vm.json``, the VM record) and SSH to it.

``image`` builds the image with mmdebstrap, ``qemu`` builds the command line and probes
the accelerator, ``snapshot`` saves a booted guest once and restores later boots from
it (``<state>/snapshots/<key16>/``), ``vm`` starts, finds and stops guests, ``remote`` opens the SSH
connection and runs commands, ``verify`` runs the testinfra checks in ``kernlab/checks/``;
``ensure`` is the one path every command takes to have a kernel, an image and a VM.
"""
