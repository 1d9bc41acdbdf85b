"""No exported result is typed in: every SymPy expression a derivation module exports is the
left side of one of its checked steps (a derived expression whose equality with a stated form was checked), or it
is in the reviewed table below, which says what it is instead: a substitution of derived results into derivation
(c)'s KL, a sum of derived coefficients, a definition, or the paper's statement a derived result is compared with.

A new export that is neither fails here until it is derived in a step or added to the table with its reason.
"""

from __future__ import annotations

import importlib

import pytest
import sympy as sp

from derivations import MODULES
from derivations.chain import Check

pytestmark = pytest.mark.symbolic

NOT_A_STEP_LHS = {
    ("posterior", "POSTERIOR_MEAN"): "MEAN_COEF_X0 x_0 + MEAN_COEF_XT x_t, both derived in steps",
    ("strided", "STRIDED_POSTERIOR_MEAN"): "STRIDED_MEAN_COEF_X0 x_0 + STRIDED_MEAN_COEF_XT x_t, both derived in steps",
    ("loss_weights", "BETA_TILDE"): "derivation (b)'s VARIANCE, re-exported",
    ("loss_weights", "KL_IN_X0"): "(c)'s NORMAL_KL at (b)'s posterior and (d)'s mean: the definition of L_{t-1}",
    ("loss_weights", "LOSS_CONSTANT"): "(c)'s NORMAL_KL at equal means, variances beta_tilde_t and sigma_t^2",
    ("loss_weights", "PAPER_LOSS_WEIGHT"): "the paper's lambda_t (Ho et al. eq. 12), compared with LOSS_WEIGHT",
    ("elbo", "PRIOR_TERM"): "(c)'s NORMAL_KL at (a)'s q(x_T | x_0) and N(0, 1): the definition of L_T",
    ("elbo", "TRANSITION_TERM_PAPER"): "the paper's closed form, compared with the derived TRANSITION_TERM",
    ("elbo", "DECODER_TERM_PAPER"): "the paper's closed form, compared with the derived DECODER_TERM",
    ("maximum_likelihood", "DATA_MODEL_KL"): "(c)'s NORMAL_KL at the data and model Gaussians",
    ("maximum_likelihood", "VAE_POSTERIOR_KL"): "(c)'s NORMAL_KL at the encoder and the true posterior",
    ("gaussian_kl_full", "KL_SEED_FORMULA"): "the seed's matrix formula, compared with the integrated KL",
    ("decoder_mean", "EDGE_COST"): "the decoder's edge bin (Ho et al. eq. 13): a definition",
    ("decoder_mean", "HALF_BIN"): "the constant 1/255 (half a bin of the 8-bit grid)",
    ("parameterisations", "V_FROM_EPS_X0"): "Salimans & Ho's definition of v",
    ("parameterisations", "SNR"): "the definition of the signal-to-noise ratio abar / (1 - abar)",
    ("parameterisations", "LOSS_WEIGHT_X0"): "SNR itself: the x_0 loss's weight is the definition of SNR",
    ("data_posterior", "MIXTURE_POSTERIOR_CDF"): "a mixture of normal CDFs (a definition); a step checks that its "
                                                 "derivative is the derived posterior density",
    ("variational_bound", "Q"): "an undetermined positive density q(z): a definition",
    ("variational_bound", "P"): "an undetermined positive density p(z): a definition",
    ("variational_bound", "JOINT"): "an undetermined positive joint density p(x, z): a definition",
    ("variational_bound", "ENCODER"): "an undetermined positive encoder density q(z | x): a definition",
    ("variational_bound", "MARGINAL"): "p(x), the integral of the joint over z: a definition",
    ("variational_bound", "POSTERIOR"): "p(z | x) = p(x, z) / p(x): the definition of the model's posterior",
    ("variational_bound", "KL_GENERAL"): "the KL's integral definition for the densities Q and P",
    ("variational_bound", "ELBO_GENERAL"): "the ELBO's integral definition, E_q[log p(x, z) / q(z | x)]",
    ("variational_bound", "POSTERIOR_KL_GENERAL"): "the KL's integral definition for the encoder and the posterior",
    ("variational_bound", "POINTWISE_SPLIT"): "the right side of the checked pointwise split of log p(x)",
    ("interior_bin", "BIN_PROBABILITY"): "the interior bin's probability Phi(delta + eta) - Phi(delta - eta): the "
                                         "decoder's definition (Ho et al. eq. 13), standardised",
    ("interior_bin", "INTERIOR_BIN_ERROR"): "the definition of the error E; a step checks the exact split it closes",
    ("interior_bin", "LEADING_TERM"): "the stated first term, compared with the derived series of E",
    ("interior_bin", "NEXT_TERM"): "the stated second term, compared with the derived series of E",
    ("optimal_reverse", "SIGMA2_STAR_POSTERIOR"): "beta_tilde_t + c_0^2 V_t: the checked conditional variance (law of "
                                                  "total variance) averaged over x_t; a step checks it is (j)'s "
                                                  "sigma*^2(Gamma_t)",
}


def _exports_not_derived_in_a_step() -> set[tuple[str, str]]:
    found = set()
    for name in MODULES:
        module = importlib.import_module(f"derivations.{name}")
        checked = [step.lhs for step in module.derivation().all_steps() if step.check is not Check.DEFINITION]
        for export in module.__all__:
            value = getattr(module, export)
            if not isinstance(value, sp.Basic) or isinstance(value, sp.Symbol):
                continue
            if not any(value == lhs for lhs in checked):
                found.add((name, export))
    return found


def test_every_export_is_derived_or_reviewed():
    found = _exports_not_derived_in_a_step()
    assert found - set(NOT_A_STEP_LHS) == set(), "exports that are neither a checked step's left side nor reviewed"
    assert set(NOT_A_STEP_LHS) - found == set(), "reviewed entries that are now derived in a step (drop them)"


def test_a_typed_in_export_is_caught(monkeypatch):
    from derivations import posterior

    monkeypatch.setattr(posterior, "VARIANCE", sp.Symbol("beta") * 2)  # typed in, no step derives it
    assert ("posterior", "VARIANCE") in _exports_not_derived_in_a_step()
