"""Sample quality metrics: FID, sFID, Inception Score, precision/recall (ADM-compatible), and an
offline Fashion-MNIST classifier metric.

Modules: `inception` (the TF FID network), `inception_weights` (loading it), `frechet`,
`inception_score`, `precision_recall`, `npz_io` (ADM batches), `evaluate` (the whole evaluation),
`reference` (building reference batches), `fmnist_classifier` (the offline metric).
"""
