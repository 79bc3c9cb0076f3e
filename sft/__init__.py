"""Supervised fine-tuning stage (TRL SFTTrainer), the chat template and the tiny base checkpoint."""
