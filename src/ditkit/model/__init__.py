"""The DiT model family: the network, its named presets and its compute cost."""
