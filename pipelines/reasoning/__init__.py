"""Reasoning data: prompt formats, generation backends, verifiers, traces and selection rules (`synth`, `select`)."""
