"""Images: the datasets (MNIST, sklearn digits, a folder), picture files (PNG, grids), and what is measured on sets
of images (Inception features, FID and KID).

May import `ddpm.core` (the pixel map) and `ddpm.runtime`; never training or evaluation.
"""
