"""What each trace result proves, and what it does not, in plain words for the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stillroom.trace.mass import MassResult
    from stillroom.trace.radioactivity import RadioactivityResult
    from stillroom.trace.served import ServedResult


def statement(r: RadioactivityResult) -> str:
    """What the radioactivity result proves, and what it does not, in plain words."""
    if r.mode == "read":
        where = f"the suspect's next-token predictions on {r.queries} of our texts"
    else:
        where = f"the suspect's answers to {r.queries} queries"
    if r.stopped == "significant":
        return (
            f"In {where}, {r.green} of {r.tuples_scored} distinct (context, token) pairs are "
            f"green for key {r.key_id} ({r.green_rate:.1%} vs {r.gamma:.0%} by chance): "
            f"p = {r.p_value:.2g}, corrected for {len(r.looks)} looks. A model that never saw "
            "text watermarked with this key would show this with at most that probability. It "
            "shows the suspect learned from such text; it does not show how it obtained it, "
            "nor how much of its training data it was."
        )
    return (
        f"In {where}, no evidence at p < {r.target_p:g} (p = {r.p_value:.2g}, {r.green} of "
        f"{r.tuples_scored} pairs green vs {r.gamma:.0%} expected). This does not show the "
        "suspect never saw our outputs: little watermarked data, a different domain, or "
        "filtering can leave too weak a trace for this budget."
    )


def mass_statement(r: MassResult) -> str:
    """What the green-mass result proves, and what it does not, in plain words."""
    against = f", net of the baseline {r.baseline}'s" if r.baseline else ""
    where = (
        f"Reading {r.queries} unwatermarked texts ({r.positions:,} positions), the suspect put "
        f"{r.green_mass:.1%} of its probability on tokens green for key {r.key_id} "
        f"({r.gamma:.0%} by chance{against}): z = {r.z:.2f}"
    )
    if r.stopped == "significant":
        return (
            f"{where}, p = {r.p_value:.2g} (at most {r.p_bound:.2g} with no approximation). "
            "A model that never saw text watermarked with this key would score this high with "
            "at most that probability. It shows the suspect learned from such text; it does "
            "not show how it obtained it, nor how much of its training data it was."
        )
    return (
        f"{where}, p = {r.p_value:.2g}: no evidence at p < {r.target_p:g}. This does not show "
        "the suspect never saw our outputs: a small watermarked share of its data can leave "
        "too weak a trace."
    )


def served_statement(r: ServedResult) -> str:
    """What the served-answer result proves, and what it does not, in plain words."""
    how = (
        "found it likelier" + (f", net of {r.baseline}," if r.baseline else "")
        if r.scoring == "likelihood"
        else "answered closer to it"
    )
    twins = "a fresh answer" if r.twins == 1 else f"{r.twins} fresh answers"
    than = "its twin" if r.twins == 1 else f"all {r.twins} of its twins"
    where = (
        f"Of {r.pairs} answers served to {', '.join(r.accounts)}, each set beside {twins} "
        f"to the same request, the suspect {how} than {than} in {r.wins} "
        f"(z = {r.z:.2f}, p = {r.p_value:.2g}, at most {r.p_bound:.2g} with no approximation)"
    )
    # Answers a suspect could not have trained on: said, so the count above is understood.
    from stillroom.trace.served import never_received

    left_out = f" {never_received(r.undelivered_skipped)}." if r.undelivered_skipped else ""
    if r.p_value < 1e-3:
        return (
            f"{where}. A model that never trained on those served answers prefers them over "
            "equally likely twins this strongly with at most that probability. It shows the "
            "suspect learned from what these accounts received; it does not show how much of "
            "its training data that was, nor who trained it." + left_out
        )
    return (
        f"{where}: no strong evidence. This does not show the suspect never saw them: a "
        "small share of its data, or a model that learned little from each answer, leaves "
        "too weak a trace." + left_out
    )
