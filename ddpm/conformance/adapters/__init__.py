"""Shipped adapters: this project's own (the reference) and the popular third-party implementations.

Each module has a `factory()` that returns a list of adapters (one per configuration). `SHIPPED` maps a short
name to the `package.module:factory` spec that `python -m ddpm conform --adapter` also accepts; the third-party
ones need the `conformance` extra (diffusers, denoising-diffusion-pytorch, monai).
"""

SHIPPED = {
    "reference": "ddpm.conformance.adapters.reference:factory",
    "diffusers-ddpm": "ddpm.conformance.adapters.diffusers_ddpm:factory",
    "diffusers-ddim": "ddpm.conformance.adapters.diffusers_ddim:factory",
    "lucidrains": "ddpm.conformance.adapters.lucidrains:factory",
    "monai": "ddpm.conformance.adapters.monai_schedulers:factory",
}
