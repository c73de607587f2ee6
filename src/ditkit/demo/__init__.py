"""The offline demo: a small class-conditional DiT trained on Fashion-MNIST, sampled and measured."""
