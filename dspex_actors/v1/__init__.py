"""Generated from proto/dspex_actors/v1/ by ``python proto/generate.py``; never edit."""
