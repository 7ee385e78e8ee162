"""What is measured on checkpoints: losses and accuracies, the local learning coefficient
λ̂ with its diagnostics, divergences between trajectories, and growth laws."""
