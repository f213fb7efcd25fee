"""The two-level inverse-CDF sampler: the same draw as one cumulative sum, never a
zero-mass id, a row's draw fixed by its seed whatever batch it runs in."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stillroom.runtime.sampling import invert_cdf, pick, sample_blocks
from stillroom.teachers.base import GenerationParams


def reference(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """The textbook inverse CDF in float64 over the whole vocabulary: (A, V), (A,) -> (A,)."""
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(dim=-1)
    return torch.searchsorted(cdf, u.double()[:, None], right=True)[:, 0].clamp(
        max=cdf.shape[-1] - 1
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([0.3, 0.8, 1.0, 2.0]), st.integers(0, 2**31))
def test_blocks_draw_what_one_cumulative_sum_draws(
    vocab: int, temperature: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, vocab, generator=gen) * 4
    u = torch.rand(64, generator=gen)
    got = sample_blocks(logits.clone(), temperature, u)
    want = reference(logits, temperature, u)
    # Only a quantile within rounding of a boundary may land on the neighbouring id.
    assert (got != want).sum() <= 1


def test_no_zero_mass_id_at_either_end() -> None:
    logits = torch.full((3, 2000), float("-inf"))
    logits[:, [700, 701, 1500]] = torch.tensor([0.0, 1.0, -2.0])
    u = torch.tensor([0.0, 1.0 - 2**-24, 1.0])  # 1.0 itself: rounding past the total
    got = sample_blocks(logits, 1.0, u).tolist()
    assert got == [700, 1500, 1500]


def test_invert_cdf_skips_empty_ids() -> None:
    cdf = torch.tensor([[0.0, 0.0, 0.5, 0.5, 1.0, 1.0]])
    assert invert_cdf(cdf, torch.tensor([0.0])).tolist() == [2]
    assert invert_cdf(cdf, torch.tensor([0.5])).tolist() == [4]
    assert invert_cdf(cdf, torch.tensor([1.0])).tolist() == [4]


def test_frequencies_follow_the_tempered_distribution() -> None:
    # 20k seeded draws over a 1000-id vocabulary (two blocks): frequencies within 4 sigma.
    logits = torch.full((1000,), -30.0)
    logits[[3, 511, 512, 999]] = torch.tensor([1.0, 0.5, 0.0, -1.0])
    probs = torch.softmax(logits / 0.8, dim=-1)
    gens = [torch.Generator().manual_seed(i) for i in range(20_000)]
    picks = pick(logits.expand(20_000, -1), GenerationParams(temperature=0.8), gens)
    freq = torch.bincount(picks, minlength=1000).double() / 20_000
    sigma = (probs * (1 - probs) / 20_000).sqrt().double()
    assert torch.all((freq - probs.double()).abs() <= 4 * sigma + 1e-9)


def test_a_rows_draw_depends_on_its_seed_not_its_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 262_144, generator=gen) * 3
    params = GenerationParams(temperature=0.8)
    seeds = [11, 12, 13, 14, 15]
    together = pick(logits, params, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [
        int(pick(logits[i : i + 1], params, [torch.Generator().manual_seed(s)]))
        for i, s in enumerate(seeds)
    ]
    assert together.tolist() == alone


def test_scratch_overwrites_only_when_allowed() -> None:
    logits = torch.randn(4, 5000)
    kept = logits.clone()
    params = GenerationParams(temperature=0.8)
    seeded = [torch.Generator().manual_seed(s) for s in range(4)]
    first = pick(logits, params, seeded)
    assert torch.equal(logits, kept)
    again = pick(logits, params, [torch.Generator().manual_seed(s) for s in range(4)], True)
    assert torch.equal(first, again)
