"""What a request may say: every field either works, or is refused with a 400 that names it.

The request models (`server/protocol.py`) declare the fields Palate implements and keep whatever else a client sent
in `model_extra`. This module sorts those leftovers:

- fields of OpenAI's or vLLM's API that Palate does not implement (`tools`, `audio`, `use_beam_search`...) are
  refused with a 400 naming the field and saying why, unless their value is the no-op one (`tools: []`,
  `tool_choice: "none"`, `modalities: ["text"]`, null), which asks for nothing Palate lacks;
- any other field is unknown: a 400 naming it, as OpenAI answers ("Unrecognized request argument supplied"), or,
  with `server.unknown_fields: ignore`, ignored and listed in the `x-palate-ignored-fields` response header.

It also turns chat messages into what the chat template renders: content as a string or a list of text parts
(joined with newlines, as vLLM does), `name` kept; tool and function turns, image/audio/file parts refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from server.errors import APIError

_NO_TOOLS = "this server generates plain text and has no tool or function calling"
_NOT_STORED = "this server does not store completions"
_VLLM_ONLY = "Palate does not implement this vLLM extension"

# field -> (values that ask for nothing, why it is refused). None is always a no-op.
_CHAT_UNSUPPORTED: dict[str, tuple[tuple, str]] = {
    "tools": (([],), _NO_TOOLS),
    "tool_choice": (("none",), _NO_TOOLS),
    "functions": (([],), _NO_TOOLS),
    "function_call": (("none",), _NO_TOOLS),
    "parallel_tool_calls": ((True, False), _NO_TOOLS),  # says how to call tools; without tools it asks nothing
    "audio": ((), "the base model is a text model: no audio output"),
    "modalities": ((["text"],), "the base model is a text model: only the 'text' modality"),
    "prediction": ((), "predicted outputs are not implemented"),
    "web_search_options": ((), "this server has no web search"),
    "reasoning_effort": ((), "the served models are not reasoning models"),
    "verbosity": ((), "the served models have no verbosity setting"),
    "store": ((False,), _NOT_STORED),
    "metadata": (({},), _NOT_STORED),
    "service_tier": (("auto", "default"), "this server has one service tier"),
    "safety_identifier": ((), "this server does no abuse monitoring to attach it to"),
    "prompt_cache_key": ((), "this server does not route by cache key"),
    "echo": ((False,), "chat echo is a vLLM extension Palate does not implement; /v1/completions has echo"),
    "prompt_logprobs": ((), "use /v1/completions for prompt log-probs"),
    "add_generation_prompt": ((True,), _VLLM_ONLY),
    "continue_final_message": ((False,), _VLLM_ONLY),
    "add_special_tokens": ((False,), _VLLM_ONLY),
    "documents": ((), _VLLM_ONLY),
    "chat_template": ((), "the base model's own chat template is always used"),
    "chat_template_kwargs": (({},), "the base model's own chat template is always used"),
    "include_reasoning": ((True,), _VLLM_ONLY),
    "thinking_token_budget": ((), _VLLM_ONLY),
}
_COMPLETION_UNSUPPORTED: dict[str, tuple[tuple, str]] = {
    "suffix": (("",), "insertion (suffix) is not implemented"),
    "best_of": ((1,), "best_of is not implemented; use n"),
    "add_special_tokens": ((), _VLLM_ONLY),
    "prompt_embeds": ((), _VLLM_ONLY),
}
_SHARED_UNSUPPORTED: dict[str, tuple[tuple, str]] = {
    "use_beam_search": ((False,), "beam search is not implemented"),
    "length_penalty": ((1.0,), "length_penalty applies to beam search, which is not implemented"),
    "include_stop_str_in_output": ((False,), _VLLM_ONLY),
    "skip_special_tokens": ((True,), _VLLM_ONLY),
    "spaces_between_special_tokens": ((True,), _VLLM_ONLY),
    "truncate_prompt_tokens": ((), "prompts are never truncated; a prompt that does not fit is a 400"),
    "truncation_side": ((), "prompts are never truncated; a prompt that does not fit is a 400"),
    "allowed_token_ids": ((), _VLLM_ONLY),
    "bad_words": (([],), _VLLM_ONLY),
    "structured_outputs": ((), "use response_format (json_object or json_schema)"),
    "guided_json": ((), "use response_format (json_object or json_schema)"),
    "guided_regex": ((), "use response_format (json_object or json_schema)"),
    "guided_choice": ((), "use response_format (json_object or json_schema)"),
    "guided_grammar": ((), "use response_format (json_object or json_schema)"),
    "priority": ((0,), "this server has no priority scheduling"),
    "request_id": ((), "the server assigns request ids (x-request-id header)"),
    "cache_salt": ((), _VLLM_ONLY),
    "kv_transfer_params": ((), _VLLM_ONLY),
    "vllm_xargs": ((), _VLLM_ONLY),
    "return_tokens_as_token_ids": ((False,), _VLLM_ONLY),
    "return_token_ids": ((False,), _VLLM_ONLY),
    "logprob_token_ids": ((), _VLLM_ONLY),
    "repetition_detection": ((), _VLLM_ONLY),
    "stream_interval": ((), _VLLM_ONLY),
    "watermarking": ((False,), _VLLM_ONLY),
}
UNSUPPORTED = {"chat": {**_SHARED_UNSUPPORTED, **_CHAT_UNSUPPORTED},
               "completion": {**_SHARED_UNSUPPORTED, **_COMPLETION_UNSUPPORTED}}

# Message fields of OpenAI's API that belong to tool calling or to output modalities Palate lacks.
_MESSAGE_UNSUPPORTED = {"tool_calls": (([],), _NO_TOOLS), "tool_call_id": ((), _NO_TOOLS),
                        "function_call": ((), _NO_TOOLS), "audio": ((), "the base model is a text model"),
                        "refusal": ((), "refusal turns are not rendered by the chat template")}
_PART_TYPES_REFUSED = {"image_url": "images", "input_image": "images", "image": "images",
                       "input_audio": "audio", "audio_url": "audio", "file": "files", "input_file": "files",
                       "video_url": "video"}


def _inert(value: Any, inert_values: tuple) -> bool:
    # 1 == True in Python; a bool and a number are different answers here
    return value is None or any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in inert_values)


def unsupported(field: str, reason: str) -> APIError:
    return APIError(400, f"'{field}' is not supported: {reason}. Remove it from the request.", param=field,
                    code="unsupported_field")


def unknown(field: str) -> APIError:
    return APIError(400, f"Unrecognized request argument supplied: '{field}'. This server does not know it; remove "
                         "it, or start the server with server.unknown_fields: ignore to have unknown fields ignored.",
                    param=field, code="unknown_field")


class FieldCheck:
    """Collects what one request sent beyond the fields Palate implements; raises on the first refusal."""

    def __init__(self, unknown_fields: str):
        self.lenient = unknown_fields == "ignore"
        self.ignored: list[str] = []

    def extras(self, model: BaseModel, where: str, table: dict[str, tuple[tuple, str]]) -> None:
        for name, value in (model.model_extra or {}).items():
            path = f"{where}{name}"
            if name in table:
                inert_values, reason = table[name]
                if not _inert(value, inert_values):
                    raise unsupported(path, reason)
            elif self.lenient:
                self.ignored.append(path)
            else:
                raise unknown(path)

    def request(self, req: BaseModel, kind: str) -> None:
        self.extras(req, "", UNSUPPORTED[kind])
        stream_options = getattr(req, "stream_options", None)
        if stream_options is not None:
            if not getattr(req, "stream", False):
                raise APIError(400, "stream_options is only allowed with stream=true.", param="stream_options")
            self.extras(stream_options, "stream_options.", {"include_obfuscation": ((False,), "no obfuscation "
                                                                                      "padding is sent")})
        response_format = getattr(req, "response_format", None)
        if response_format is not None:
            self.extras(response_format, "response_format.", {})
            if response_format.json_schema is not None:
                self.extras(response_format.json_schema, "response_format.json_schema.", {})

    def messages(self, messages: list) -> list[dict]:
        """The messages as the chat template takes them: {"role", "content": str, "name"?}."""
        rendered = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if message.role in ("tool", "function"):
                raise APIError(400, f"{where}: role '{message.role}' is not supported: {_NO_TOOLS}. Send system, "
                                    "developer, user and assistant turns only.", param=f"{where}.role",
                               code="unsupported_field")
            self.extras(message, f"{where}.", _MESSAGE_UNSUPPORTED)
            entry = {"role": message.role, "content": self._content(message.content, where)}
            if message.name is not None:
                entry["name"] = message.name
            rendered.append(entry)
        return rendered

    def _content(self, content: Any, where: str) -> str:
        if content is None:
            raise APIError(400, f"{where}.content is required (a string or a list of text parts).",
                           param=f"{where}.content")
        if isinstance(content, str):
            return content
        texts = []
        for j, part in enumerate(content):
            path = f"{where}.content[{j}]"
            if part.type != "text":
                what = _PART_TYPES_REFUSED.get(part.type)
                if what:
                    raise APIError(400, f"{path}: '{part.type}' content parts are not supported: the base model is "
                                        f"a text model and takes no {what}. Send text parts only.",
                                   param=f"{path}.type", code="unsupported_content")
                raise APIError(400, f"{path}: unknown content part type '{part.type}'; this server takes 'text' "
                                    "parts.", param=f"{path}.type", code="unsupported_content")
            if not isinstance(part.text, str):
                raise APIError(400, f"{path}: a text part needs a 'text' string.", param=f"{path}.text")
            self.extras(part, f"{path}.", {})
            texts.append(part.text)
        return "\n".join(texts)
