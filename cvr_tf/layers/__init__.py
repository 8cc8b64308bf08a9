"""Keras layers: cross (DCNv2), mask (MaskNet), hierarchical ensemble (DHEN) and MLP."""
