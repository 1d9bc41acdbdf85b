"""Shipped adapters: this project's own (the reference) and the popular third-party implementations.

Each module has a `factory()` that returns a list of adapters (one per configuration). `SHIPPED` maps a short
name to the `package.module:factory` spec that `python -m ddpm conform --adapter` also accepts (and runs all of them
by default); the third-party ones need the `conformance` extra (diffusers, denoising-diffusion-pytorch, monai):
diffusers' DDPMScheduler, DDIMScheduler, their batched ("parallel") variants and DDIMInverseScheduler,
lucidrains' GaussianDiffusion and MONAI's DDPMScheduler and DDIMScheduler.
"""

SHIPPED = {
    "reference": "ddpm.conformance.adapters.reference:factory",
    "diffusers-ddpm": "ddpm.conformance.adapters.diffusers_ddpm:factory",
    "diffusers-ddim": "ddpm.conformance.adapters.diffusers_ddim:factory",
    "lucidrains": "ddpm.conformance.adapters.lucidrains:factory",
    "diffusers-parallel": "ddpm.conformance.adapters.diffusers_parallel:factory",
    "diffusers-inverse": "ddpm.conformance.adapters.diffusers_inverse:factory",
    "monai": "ddpm.conformance.adapters.monai_schedulers:factory",
}
