"""Datasets: image folders, Fashion-MNIST, and the VAE latent cache."""
