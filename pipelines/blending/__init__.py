"""Blending: the phase blend plan, token routing and Megatron shards (`nanoforge mix`)."""
