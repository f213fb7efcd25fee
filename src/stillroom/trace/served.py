"""Served-answer test: did the suspect train on the very answers we served to an account?

The gateway logs every answer it served. For each one, S, the teacher is asked the same
request again K times with new seeds, which gives twins F_1..F_K: other draws from the same
distribution, which nobody has seen. Whatever the suspect is, if it never trained on S, then
S, F_1, ..., F_K are exchangeable from its point of view: given the K + 1 texts, which of them
was served is uniform. With g the suspect's score of a text, the statistic is
T = sum over answers of g(S) - mean(g(S), g(F_1), ..., g(F_K)), and its null comes from that
uniform choice, independently per answer, through the exact cumulant generating function
(`stillroom.trace.tail.choice_tail`). With K = 1 this is Fisher's paired randomization test:
the signs of D = g(S) - g(F) are fair coins given their sizes.

It holds exactly, whatever the suspect learned from the teacher, the prompts or other
outputs, and whatever g is, as long as g is fixed before the served one is pointed out. More
twins make it stronger: a suspect's score of one text carries noise of its own (variance
v, say), and comparing S with the mean of K twins leaves v (1 + 1/K) of it rather than 2v,
so a shift of g(S) stands out by a factor sqrt(2K / (K + 1)): 1.22 at K = 3, 1.41 at most.
Each twin costs a teacher call per answer (ours) and a suspect read per answer.

Two choices of g:

- likelihood (open weights): the suspect's mean log-probability per token of the answer
  after its prompt, optionally minus the same figure under a reference model (the teacher),
  which cancels how likely an answer is in itself. A model trained on S finds S likelier:
  membership inference (Shokri et al. 2017; the reference-model form is that of Carlini et
  al. 2022), made exact by the replayed twin F;
- answers (black box): the suspect answers the prompt greedily, and g(x) is the share of
  its answer's token trigrams found in x. A model that learned S repeats some of it.

What it needs is what makes it exact: the twins must come from the same model, sampling
parameters and watermark key that served S. The log records the parameters and the key's
id; the test refuses a key that does not match. And S must have reached the account: an
answer whose client was gone before it was sent, or left its stream before the end, is left
out (and counted), since nobody could have trained on it. Rows logged before the gateway
recorded delivery say nothing about it; they are taken as received.

What it proves is narrower than radioactivity in one way and stronger in another. It needs
the served texts, and says nothing about a model that learned only from other accounts. But
it needs no watermark, and what it detects is this account's particular draws, not merely
the teacher's style.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.errors import InputError
from stillroom.jsonl_texts import jsonl_lines
from stillroom.reportkit.files import write_atomic
from stillroom.trace.tail import Tail, choice_tail

Messages = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Served:
    """One answer the gateway served: the request as logged, and the text of one choice."""

    request_id: str
    choice: int
    messages: Messages
    params: dict[str, Any]
    text: str
    key_id: str | None

    @property
    def ref(self) -> str:
        return f"{self.request_id}/{self.choice}"


@dataclass(frozen=True)
class ServedResult:
    scoring: str  # "likelihood" or "answers"
    accounts: tuple[str, ...]
    pairs: int  # answers served, each set beside its twins
    queries: int  # suspect answers asked (answers) or texts read (likelihood)
    wins: int  # answers the suspect prefers to every one of their twins
    ties: int  # answers the suspect scores as high as their best twin, no higher
    mean_diff: float  # mean of g(served) - mean of g(twins)
    z: float
    p_value: float
    p_bound: float
    baseline: str | None = None
    undelivered_skipped: int = 0  # answers the clients never received, left out
    twins: int = 1  # fresh draws each served answer is compared with


class ServedAnswers(list[Served]):
    """`read_served`'s answers, with the count of those it left out as never received."""

    def __init__(self, items: Sequence[Served], undelivered_skipped: int = 0) -> None:
        super().__init__(items)
        self.undelivered_skipped = undelivered_skipped


def skipped_count(served: Sequence[Served]) -> int:
    """How many answers `read_served` left out of `served` as never received (0 if it did
    not come from there)."""
    return served.undelivered_skipped if isinstance(served, ServedAnswers) else 0


def _account_ids(known: dict[str, str], accounts: Sequence[str], log: str) -> list[str]:
    """The ids of `accounts`, each given by name or id; an unknown one is refused by name."""
    ids = []
    for a in accounts:
        if a in known:
            ids.append(known[a])
        elif a in known.values():
            ids.append(a)
        else:
            raise InputError(
                f"--account {a!r}: no such account in {log}; it has "
                f"{', '.join(sorted(known)[:10]) or 'none'}" + (" ..." if len(known) > 10 else "")
            )
    return ids


def read_served(log: str, accounts: Sequence[str], *, limit: int | None = None) -> ServedAnswers:
    """The chat answers the gateway served to `accounts` (names or ids) and their clients
    received, oldest first; those never received are left out, and counted."""
    import sqlalchemy as sa

    from stillroom.serve.db import DELIVERED, open_db
    from stillroom.serve.db import accounts as accounts_table

    if "://" not in log and not Path(log).expanduser().is_file():
        raise InputError(
            f"--served {log}: no such gateway database; give the SQLite file or database "
            "URL that `stillroom serve --db` wrote"
        )
    if not accounts:
        raise InputError("--served needs --account NAME: whose answers to test")
    engine = open_db(log, migrate=False)
    try:
        with engine.connect() as conn:
            names = sa.select(accounts_table.c.name, accounts_table.c.id)
            ids = _account_ids({row.name: row.id for row in conn.execute(names)}, accounts, log)
            rows = _answered(conn, ids)
    finally:
        engine.dispose()
    out: list[Served] = []
    skipped = 0
    for row in rows:
        answers = _answers(row)
        # NULL: logged before the gateway recorded delivery, so unknown; taken as received.
        # "sending" (the gateway stopped mid-reply) is not known to have been: left out.
        if row.delivery in (None, DELIVERED):
            out.extend(answers)
        else:
            skipped += len(answers)
    if not out:
        never = f" ({never_received(skipped)})" if skipped else ""
        raise InputError(
            f"--served {log}: no answered chat requests from {', '.join(accounts)}{never}; "
            "check the account names (`stillroom admin accounts list`)"
        )
    return ServedAnswers(out[:limit] if limit else out, skipped)


def _answered(conn: Any, ids: list[str]) -> list[Any]:
    """The accounts' answered chat requests, oldest first, each with how its reply went out
    (None throughout a log older than that column)."""
    import sqlalchemy as sa

    from stillroom.serve.db import requests

    columns = {c["name"] for c in sa.inspect(conn).get_columns(requests.name)}
    delivery = requests.c.delivery if "delivery" in columns else sa.null()
    query = (
        sa.select(
            requests.c.id,
            requests.c.messages,
            requests.c.params,
            requests.c.response_text,
            requests.c.watermark_key_id,
            delivery.label("delivery"),
        )
        .where(requests.c.account_id.in_(ids))
        .where(requests.c.status == 200)
        .where(requests.c.endpoint == "chat.completions")
        .order_by(requests.c.created_at, requests.c.id)
    )
    return list(conn.execute(query))


def _answers(row: Any) -> list[Served]:
    """A logged request's answers: one per choice with text (and a prompt to ask again)."""
    messages = tuple((m["role"], m["content"]) for m in json.loads(row.messages or "[]"))
    texts = json.loads(row.response_text or "[]")
    params = json.loads(row.params or "{}")
    return [
        Served(row.id, choice, messages, params, text, row.watermark_key_id)
        for choice, text in enumerate(texts)
        if messages and text
    ]


def replay_seed(served: Sequence[Served], seed: int) -> int:
    """The replays' seed: one for all of them, so a local teacher batches them (it derives
    each row's own seed from this and the request), and never one the accounts sent, which
    would give S again."""
    sent = {s.params.get("seed") for s in served}
    for attempt in range(100):
        material = f"stillroom-replay|{seed}|{attempt}".encode()
        mine = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1
        if mine not in sent:
            return mine
    raise AssertionError("unreachable: 100 distinct 63-bit seeds were all sent")


def check_key(served: Sequence[Served], key: Any) -> None:
    """The replay must be watermarked exactly as S was, or S and F are not exchangeable."""
    key_ids = {s.key_id for s in served}
    if len(key_ids) > 1:
        raise InputError(
            f"the served answers carry different watermark keys ({sorted(map(str, key_ids))}); "
            "test one key at a time: pick the accounts, or --served-limit, accordingly"
        )
    (wanted,) = key_ids
    got = getattr(key, "key_id", None) if key is not None else None
    if wanted != got:
        raise InputError(
            f"the served answers were watermarked with key {wanted or '(none)'} but the "
            f"replay would use {got or 'no key'}: give --key-file with the gateway's key"
            + (" file" if wanted else ", or drop --key-file")
            + ", so that each replay is drawn exactly as the served answer was"
        )


def replay_requests(served: Sequence[Served], *, seed: int) -> list[Any]:
    """The teacher request that replays each served answer: the logged sampling parameters,
    a new seed. The same request served twice (or n > 1 choices) gets twins of its own, so
    the count runs over the whole of `served`, cached or not."""
    from stillroom.teachers.base import GenerationParams, TeacherRequest

    asked = []
    repeats: dict[tuple[Messages, GenerationParams], int] = {}
    mine = replay_seed(served, seed)
    for item in served:
        p = item.params
        params = GenerationParams(
            max_tokens=p.get("max_tokens"),
            temperature=p.get("temperature"),
            top_p=p.get("top_p"),
            n=1,
            seed=mine,
            stop=tuple([p["stop"]] if isinstance(p.get("stop"), str) else p.get("stop") or ()),
        )
        seen = repeats.get((item.messages, params), 0)
        repeats[(item.messages, params)] = seen + 1
        asked.append(TeacherRequest(messages=item.messages, params=params, sample_index=seen))
    return asked


def replay(served: Sequence[Served], teacher: Any, *, seed: int) -> list[str]:
    """A fresh answer to each served request, from `teacher` (the gateway's own model and
    key) with the logged sampling parameters and a new seed."""
    return [c.choices[0].text for c in teacher.generate(replay_requests(served, seed=seed))]


def replays(
    served: Sequence[Served],
    make_teacher: Callable[[], Any],
    *,
    seed: int,
    cache: Path | None = None,
) -> list[str]:
    """`replay`, kept in `cache` (JSONL, one row per served answer and seed) when given:
    replaying costs a teacher call per answer, and one set serves every suspect tested
    against it. Rows of other seeds in the file are kept."""
    done: dict[tuple[int, str], str] = {}
    if cache is not None and cache.is_file():
        for n, line in jsonl_lines(cache.read_text(encoding="utf-8")):
            try:
                row = json.loads(line)
                done[(int(row["seed"]), str(row["ref"]))] = str(row["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(
                    f"{cache}:{n}: not a replay row ({e}); delete the file to replay again"
                ) from e
    missing = [i for i, s in enumerate(served) if (seed, s.ref) not in done]
    if missing:
        asked = replay_requests(served, seed=seed)
        drawn = make_teacher().generate([asked[i] for i in missing])
        done.update(
            ((seed, served[i].ref), c.choices[0].text) for i, c in zip(missing, drawn, strict=True)
        )
        if cache is not None:
            rows = [{"ref": ref, "seed": k, "text": text} for (k, ref), text in done.items()]
            write_atomic(cache, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return [done[(seed, s.ref)] for s in served]


def twin_replays(
    served: Sequence[Served],
    make_teacher: Callable[[], Any],
    *,
    twins: int,
    seed: int = 0,
    cache: Path | None = None,
) -> list[list[str]]:
    """`twins` sets of replays (seeds seed, seed + 1, ...), the teacher loaded at most once."""
    teacher = functools.cache(make_teacher)
    return [replays(served, teacher, seed=seed + k, cache=cache) for k in range(twins)]


def answer_logprobs(model: Any, messages: Sequence[Messages], answers: Sequence[str]) -> np.ndarray:
    """Mean log-probability per token of each answer after its chat prompt, under `model`
    (a loaded LocalTeacher). Padded on the right; the output layer runs only on answer
    positions."""
    import torch

    from stillroom.runtime.tensors import pad_batch

    tok = model.tokenizer
    rows = []
    for msgs, answer in zip(messages, answers, strict=True):
        head = tok.apply_chat_template(
            [{"role": r, "content": c} for r, c in msgs], tokenize=False, add_generation_prompt=True
        )
        prompt = tok(head, add_special_tokens=False)["input_ids"]
        body = tok(answer, add_special_tokens=False)["input_ids"]
        rows.append((prompt, body))
    out = np.full(len(rows), np.nan)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    for start in range(0, len(order), 8):
        chunk = [i for i in order[start : start + 8] if rows[i][1]]
        if not chunk:
            continue
        # The teacher's own padding and output layer (softcapped, 64 rows at a time).
        runtime = model.runtime  # one batch at a time on the model, as its own calls do
        ids, mask = pad_batch(
            [rows[i][0] + rows[i][1] for i in chunk], runtime.pad_token_id, runtime.device
        )
        with runtime.lock, torch.inference_mode():
            hidden = runtime.lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, i in enumerate(chunk):
                prompt_len, body = len(rows[i][0]), rows[i][1]
                h = hidden[r, prompt_len - 1 : prompt_len - 1 + len(body)]
                target = torch.tensor(body, device=runtime.device)[:, None]
                out[i] = float(runtime.log_probs(h, target)[:, 0].mean())
    return out


def trigram_overlap(tokenizer: Any, answer: str, text: str) -> float:
    """Share of `answer`'s distinct token trigrams that occur in `text`."""

    def grams(s: str) -> set[tuple[int, ...]]:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        return {tuple(ids[i : i + 3]) for i in range(len(ids) - 2)}

    mine = grams(answer)
    return len(mine & grams(text)) / len(mine) if mine else 0.0


def twin_test(v: np.ndarray) -> Tail:
    """P(T >= observed) for T = sum_i (v_i0 - mean_j v_ij), where row i holds the scores of a
    served answer (column 0) and of its twins, when which of them was served is uniform."""
    v = np.asarray(v, dtype=np.float64)
    return choice_tail(v[np.isfinite(v).all(axis=1)])


def paired_test(d: np.ndarray) -> Tail:
    """P(sum D >= observed) when each D's sign is a fair coin given |D|: one twin each."""
    d = np.asarray(d, dtype=np.float64)
    return twin_test(np.column_stack([d, np.zeros_like(d)]))


def summarize(
    v: np.ndarray,
    *,
    scoring: str,
    accounts: Sequence[str],
    queries: int,
    baseline: str | None,
    undelivered_skipped: int = 0,
) -> ServedResult:
    """The result of `twin_test` on scores `v`: the served answer in column 0, its twins
    after."""
    tail = twin_test(v)
    pairs, v = len(v), v[np.isfinite(v).all(axis=1)]
    best_twin = v[:, 1:].max(axis=1)
    return ServedResult(
        scoring=scoring,
        accounts=tuple(accounts),
        pairs=pairs,
        queries=queries,
        wins=int((v[:, 0] > best_twin).sum()),
        ties=int((v[:, 0] == best_twin).sum()),
        mean_diff=float((v[:, 0] - v[:, 1:].mean(axis=1)).mean()) if len(v) else 0.0,
        z=tail.z,
        p_value=tail.p_value,
        p_bound=tail.p_bound,
        baseline=baseline,
        undelivered_skipped=undelivered_skipped,
        twins=v.shape[1] - 1,
    )


def _twin_sets(twins: Sequence[Sequence[str]], served: Sequence[Served]) -> list[list[str]]:
    sets = [list(t) for t in twins]
    if not sets or any(isinstance(t, str) or len(t) != len(served) for t in twins):
        raise ValueError("twins: one list of replays per twin, each as long as `served`")
    return sets


def likelihood_test(
    suspect: str,
    served: Sequence[Served],
    twins: Sequence[Sequence[str]],
    *,
    accounts: Sequence[str],
    baseline: str | None = None,
    api: Any = None,
    tokenizer: Any = None,
) -> ServedResult:
    """Does the suspect find the served answers likelier than their twins (`twins`: one list
    of replays per twin)? With open weights (`suspect` a folder), or through `api` (a
    `LogprobsApi` that echoes prompt log-probs; `tokenizer` renders the chat prompts)."""
    from stillroom.teachers.local import LocalTeacher

    sets = [[s.text for s in served], *_twin_sets(twins, served)]
    messages = [s.messages for s in served]

    def scores(model: str) -> np.ndarray:
        lm = LocalTeacher.load(model)
        try:
            return np.column_stack([answer_logprobs(lm, messages, texts) for texts in sets])
        finally:
            del lm

    if api is not None:
        from stillroom.trace.api_likelihood import api_answer_logprobs

        v = np.column_stack([api_answer_logprobs(api, tokenizer, messages, t) for t in sets])
    else:
        v = scores(suspect)
    if baseline is not None:
        v = v - scores(baseline)
    return summarize(
        v,
        scoring="likelihood",
        accounts=accounts,
        queries=len(sets) * len(served),
        baseline=baseline,
        undelivered_skipped=skipped_count(served),
    )


def answers_test(
    suspect: Any,
    served: Sequence[Served],
    twins: Sequence[Sequence[str]],
    tokenizer: Any,
    *,
    accounts: Sequence[str],
    seed: int = 0,
) -> ServedResult:
    """Black box: are the suspect's greedy answers closer to what we served than to the
    twins? One query per served answer; only single-message requests can be asked."""
    sets = _twin_sets(twins, served)
    usable = [i for i, s in enumerate(served) if [r for r, _ in s.messages] == ["user"]]
    if not usable:
        raise InputError(
            "the served requests all have several messages; a black-box suspect is asked one "
            "user message, so test its weights instead (a model folder)"
        )
    max_tokens = max(int(served[i].params.get("max_tokens") or 128) for i in usable)
    asked = [served[i].messages[0][1] for i in usable]
    said = suspect.answer(asked, max_tokens=max_tokens, temperature=0.0, seed=seed)
    v = np.array(
        [
            [trigram_overlap(tokenizer, a, t) for t in [served[i].text, *(f[i] for f in sets)]]
            for a, i in zip(said, usable, strict=True)
        ]
    )
    return summarize(
        v,
        scoring="answers",
        accounts=accounts,
        queries=len(usable),
        baseline=None,
        undelivered_skipped=skipped_count(served),
    )


def never_received(n: int) -> str:
    """How the served-answer test says it left out answers whose client never got them."""
    if n == 1:
        return "1 answer the client never received was left out"
    return f"{n} answers the client never received were left out"
