"""Tests of the layers area: OCI layers, image layouts, descriptors, diffs."""
