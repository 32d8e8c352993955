"""/tokenize and /detokenize, as vLLM's OpenAI server has them: the base model's tokenizer, which every adapter
shares, so `model` (optional) only has to name something this server serves."""

from __future__ import annotations

from typing import Any

from server.engines.base import Engine
from server.errors import APIError
from server.models import ModelManager
from server.protocol import (DetokenizeRequest, DetokenizeResponse, TokenizeChatRequest, TokenizeCompletionRequest,
                             TokenizeResponse)
from server.request_checks import FieldCheck


def _vocab_size(tokenizer: Any) -> int:
    return len(tokenizer)


def tokenize(engine: Engine, models: ModelManager, req: TokenizeCompletionRequest | TokenizeChatRequest,
             unknown_fields: str) -> TokenizeResponse:
    """Token ids of a prompt, or of messages rendered with the chat template exactly as a chat request renders
    them (the same checks on roles and content parts)."""
    if req.model is not None:
        models.resolve(req.model)  # 404 listing what is served
    check = FieldCheck(unknown_fields)
    check.extras(req, "", {})
    tokenizer = engine.tokenizer()
    if isinstance(req, TokenizeChatRequest):
        text = tokenizer.apply_chat_template(check.messages(req.messages), tokenize=False,
                                             add_generation_prompt=req.add_generation_prompt)
    else:
        text = req.prompt
    ids = list(tokenizer(text, add_special_tokens=req.add_special_tokens)["input_ids"])
    strs = tokenizer.convert_ids_to_tokens(ids) if req.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=engine.max_model_len, tokens=ids, token_strs=strs)


def detokenize(engine: Engine, models: ModelManager, req: DetokenizeRequest, unknown_fields: str) -> DetokenizeResponse:
    """The text of token ids; an id outside the vocabulary is a 400 naming it."""
    if req.model is not None:
        models.resolve(req.model)
    FieldCheck(unknown_fields).extras(req, "", {})
    tokenizer = engine.tokenizer()
    size = _vocab_size(tokenizer)
    bad = [t for t in req.tokens if not 0 <= t < size]
    if bad:
        raise APIError(400, f"token id(s) {bad[:10]} are outside the vocabulary (0..{size - 1}).", param="tokens")
    return DetokenizeResponse(prompt=tokenizer.decode(req.tokens))
