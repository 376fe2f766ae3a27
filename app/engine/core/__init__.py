"""Ground layer: paths, errors, cancellation, devices, elements, symmetry, the property table and the model registry."""
