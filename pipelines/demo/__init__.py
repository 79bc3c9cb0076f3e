"""The demo corpus generator behind `nanoforge demo-data`."""
