"""Keras layers: cross (DCNv2), mask (MaskNet), hierarchical ensemble (DHEN), attention, MLP,
and the multi-task ones: multi-gate mixture of experts (MMoE, PLE) and ESMM's product."""
