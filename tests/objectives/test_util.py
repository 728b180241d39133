"""Tests of the chi-square helper the distribution tests rely on."""

import pytest

from ._util import chi2_pvalue


def test_chi2_pvalue_matches_known_quantiles():
    # Tabulated 95% / 99.9% quantiles of chi-square.
    assert chi2_pvalue(18.307, 10) == pytest.approx(0.05, abs=0.003)
    assert chi2_pvalue(29.588, 10) == pytest.approx(0.001, abs=0.0003)
    assert chi2_pvalue(124.342, 100) == pytest.approx(0.05, abs=0.002)
