"""Preference (DPO) and RL (GRPO) stages, rewards and checkpoint merging."""
