"""ddpm-verified: DDPM (Ho et al. 2020) in PyTorch, tested against the SymPy derivations in `derivations/`.

Modules: `schedules` (beta_t), `diffusion` (q and p_theta), `likelihood` (KL, decoder, ELBO in bits/dim),
`losses` (Algorithm 1 and the bound as training objectives), `samplers` (Algorithm 2 and DDIM).
"""

__version__ = "0.1.0"
