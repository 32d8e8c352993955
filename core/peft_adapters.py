"""Several PEFT LoRA adapters on one transformers model, one picked per forward pass - the one home of this logic for
the hf reference engine (server/engines/hf_engine.py) and the hf margin scorer (eval/logprobs_hf.py).

The base model is wrapped in a `PeftModel` when the first adapter is loaded; later adapters are added by name
(PEFT's multi-adapter support). `active(key)` selects one for the forward passes inside it; `active(None)` runs the
base model (the adapters disabled). Not thread-safe: callers serialise forward passes themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any


class UnknownAdapter(KeyError):
    """`active(key)` for a key that was never loaded (or was unloaded)."""


class PeftAdapters:
    def __init__(self, model: Any):
        self.model = model  # the base model, then the PeftModel around it
        self._names: dict[Hashable, str] = {}
        self._made = 0

    def loaded(self, key: Hashable) -> bool:
        return key in self._names

    def load(self, key: Hashable, path: Path | str) -> None:
        """Attach the adapter saved at `path` under `key` (nothing to do when `key` is loaded already)."""
        if key in self._names:
            return
        from peft import PeftModel

        self._made += 1
        name = f"adapter_{self._made}"  # PEFT names become module-dict keys: letters, digits, underscores
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()
        self._names[key] = name

    def unload(self, key: Hashable) -> None:
        name = self._names.pop(key, None)
        if name is not None:
            self.model.delete_adapter(name)

    @contextlib.contextmanager
    def active(self, key: Hashable | None) -> Iterator[Any]:
        """The model with adapter `key` selected (None: the base model); yields the model to call."""
        from peft import PeftModel

        if key is None:
            with self.model.disable_adapter() if isinstance(self.model, PeftModel) else contextlib.nullcontext():
                yield self.model
            return
        if key not in self._names:
            raise UnknownAdapter(key)
        self.model.set_adapter(self._names[key])
        yield self.model
