"""First stages: the fixed autoencoders that map images to the space the diffusion model works in.

`load_first_stage("sd-vae-ft-ema")` gives the Stable Diffusion VAE used by DiT, `"vavae-f16d32"`
LightningDiT's VA-VAE (from local files); `"identity"` keeps pixels, for training directly on small
images such as Fashion-MNIST.
"""
