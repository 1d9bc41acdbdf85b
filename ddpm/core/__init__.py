"""The math core: beta schedules, the forward process q and its tables, the unchecked kernels, the reverse step of
Algorithm 2 and the samplers built on it, the bound (KL, decoder, ELBO in bits/dim), the training objectives, the
bound's statistics and the pixel map.

Owns every formula of the paper that the code computes; each is tested against `derivations/`. May import torch,
numpy and `ddpm.runtime` only: nothing here reads files, trains or knows about checkpoints.
"""
