"""Stage 1: kernels. Takes ``configs/kernels.yaml``, ``configs/*.config`` fragments and
``patches/<version>/``; gives a build directory ``<work>/build/<version>-<key12>/`` with
``build.json`` (the build record), bzImage, vmlinux, System.map, config and headers.

``catalog`` reads the catalog, ``source`` resolves and extracts the source (tarball, URL,
git, Debian package), ``patch`` applies the series, ``kconfig`` merges and verifies the
config, ``build`` runs make and writes the record, ``selection`` picks which existing build
a ``--kernel`` means, ``kheaders`` packs a build's headers into a disk image for the guest,
and ``tidy`` finds what `invoke clean` may remove (builds, trees and headers disks not in use).
"""
