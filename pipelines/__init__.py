"""nanoforge data stages: Ray jobs that curate, mix, synthesize and select data."""
