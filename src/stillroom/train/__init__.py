"""Training students: pure loss functions, student initialisation, the training loop."""
