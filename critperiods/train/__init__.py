"""Training: data and the blur deficit, models, the SGD loop (one seed, stacked seeds, CUDA
graphs), and the grouped network that runs several copies of a model as one."""
