"""Carrying builds and bundles between machines: ``pack`` writes one archive that
reproduces a bundle offline (`invoke pack`, `invoke reproduce PACK`); ``push`` publishes
builds, headers disks and images to an OCI registry (`invoke push`). The registry client
and the pull in front of every build are core/oci.py and core/registry.py, which the
stages call (imports point down); each stage names its own layers."""
