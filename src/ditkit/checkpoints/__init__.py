"""DiT checkpoints: ditkit's format, the official .pt files and diffusers, behind one loader.

- `load_model(path)` / `load_checkpoint(path)`: any of the three kinds (see `loader`).
- `save_model(model, path, ema=..., extra=...)`: ditkit's format (see `native`).
- `export_diffusers(model, out_dir, vae=...)` / `import_diffusers(path)`: diffusers (see `diffusers_interop`).
- `convert_checkpoint(src, dst, to=...)`: what `ditkit convert` runs.
"""

from ditkit.checkpoints.convert import convert_checkpoint
from ditkit.checkpoints.diffusers_interop import export_diffusers, import_diffusers, to_diffusers_transformer
from ditkit.checkpoints.loader import LoadedCheckpoint, load_checkpoint, load_model, read_checkpoint
from ditkit.checkpoints.native import save_model

__all__ = [
    "LoadedCheckpoint",
    "convert_checkpoint",
    "export_diffusers",
    "import_diffusers",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_model",
    "to_diffusers_transformer",
]
