"""Carrying builds and bundles between machines: ``pack`` writes one archive that
reproduces a bundle offline (`invoke pack`, `invoke reproduce PACK`)."""
