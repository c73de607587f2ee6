"""Sampling for people: the `DiTPipeline`, class names, FID-scale sharded runs and latent walks.

- `pipeline`: `DiTPipeline` (model + first stage + diffusion settings; labels and seeds in, images out).
- `class_names`: ImageNet's names and synonyms, name -> label resolution with suggestions.
- `sharded`: N samples across processes in resumable shards, packed in ADM's `.npz` layout.
- `walks`: slerp noise walks and class-embedding walks, as grids and GIFs.
- `save`: grid + single PNGs + a JSON record, what `ditkit sample` writes.
"""
