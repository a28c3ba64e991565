"""Live measurement: the sampler, grid following, epoch records, prediction, coverage, signals."""
