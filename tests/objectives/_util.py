"""Shared pieces of the objective tests: constants, a chi-square test (scipy is not a dependency)
and the span-corruption reconstruction."""

import math

import numpy as np

from jaxlm import objectives as O

VOCAB = 32128  # T5's vocabulary size
EOS = 1
MODE_IDS = {"nlu": 4, "s2s": 5, "nlg": 6}
SPECIALS = (0, 1, 2, 7)  # pad, eos, unk, a mode token
MASK_ID = 4  # not listed in SPECIALS on purpose: mlm always treats mask_id as special


def chi2_pvalue(stat: float, df: int) -> float:
    """Upper tail of chi-square(df) by the Wilson-Hilferty cube-root normal approximation."""
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_gof(observed: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of a chi-square goodness of fit; tail bins with small expectation are pooled."""
    observed = np.asarray(observed, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if np.any((probs == 0) & (observed > 0)):
        return 0.0  # an impossible value was observed
    observed, probs = observed[probs > 0], probs[probs > 0]
    expected = probs * observed.sum()
    small = np.flatnonzero(expected < min_expected)
    if small.size:  # the distributions tested here decay, so small bins form the tail
        cut = max(int(small[0]), 1)
        observed = np.append(observed[:cut], observed[cut:].sum())
        expected = np.append(expected[:cut], expected[cut:].sum())
    stat = float(((observed - expected) ** 2 / expected).sum())
    return chi2_pvalue(stat, max(observed.size - 1, 1))


def reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int) -> list[int]:
    """Rebuild the original sequence from span-corruption inputs and targets."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    is_sentinel = lambda t: t >= vocab_size - O.NUM_SENTINELS  # noqa: E731
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets[:-1].tolist():
        if is_sentinel(t):
            current = t
            spans[t] = []
        else:
            spans[current].append(t)  # KeyError if targets do not start with a sentinel
    out: list[int] = []
    for t in inputs[:-1].tolist():
        out.extend(spans.pop(t) if is_sentinel(t) else [t])
    assert not spans, "targets hold spans that the inputs never reference"
    return out


def sentinels(x: np.ndarray) -> np.ndarray:
    return x[x >= VOCAB - O.NUM_SENTINELS]
