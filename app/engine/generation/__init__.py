"""ICSG3D generation: density encoding, segmentation, voxel models, settings, novelty and the generator."""
