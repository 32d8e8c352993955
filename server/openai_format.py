"""Engine log-probs in OpenAI's and vLLM's response shapes. Pure functions: engine objects in, JSON-ready dicts out."""

from __future__ import annotations

from collections.abc import Callable

from server.engines.base import Candidate, TokenLogprob

# One echoed prompt token for a completion's logprobs: (its text, its candidates or None for the first token, k).
EchoEntry = tuple[str, "list[Candidate] | None", int]


def echoed_entries(prompt_ids: list[int], prompt_logprobs: list[list[Candidate] | None], k: int,
                   decode: Callable[[list[int]], str]) -> list[EchoEntry]:
    """The prompt tokens as they lead an echoed completion's logprobs: the first token has no logprob (null, as in
    vLLM); the others carry their own logprob and up to `k` alternatives."""
    entries = []
    for token_id, candidates in zip(prompt_ids, prompt_logprobs):
        text = candidates[0].token if candidates else decode([token_id])
        entries.append((text, candidates, k))
    return entries


def logprobs_payload(kind: str, logprobs: list[TokenLogprob], echoed: list[EchoEntry] | None = None) -> dict | None:
    """OpenAI's `logprobs` object for a chat choice (`content`) or a completion choice (`tokens`,
    `token_logprobs`, `top_logprobs`), with echoed prompt entries first for completions."""
    if not logprobs and not echoed:
        return None
    if kind == "chat":
        return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                             "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                              for t, v in lp.top]} for lp in logprobs]}
    tokens, values, tops = [], [], []
    for text, candidates, k in echoed or []:
        tokens.append(text)
        if candidates is None:
            values.append(None)
            tops.append(None)
            continue
        values.append(candidates[0].logprob)
        tops.append({c.token: c.logprob for c in candidates if c.rank <= k} if k else {})
    tokens += [lp.token for lp in logprobs]
    values += [lp.logprob for lp in logprobs]
    tops += [dict(lp.top) for lp in logprobs]
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": []}


def prompt_logprobs_payload(prompt_logprobs: list[list[Candidate] | None] | None) -> list | None:
    """vLLM's `prompt_logprobs`: per prompt token, null (the first) or {token id: {logprob, rank, decoded_token}},
    the actual token first, then the most likely ones."""
    if prompt_logprobs is None:
        return None
    return [None if entry is None else
            {str(c.token_id): {"logprob": c.logprob, "rank": c.rank, "decoded_token": c.token} for c in entry}
            for entry in prompt_logprobs]
