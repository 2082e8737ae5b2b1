"""How models come in: snnTorch models and training, datasets, NIR export."""
