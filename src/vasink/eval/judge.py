"""An LLM judge behind any OpenAI-compatible chat endpoint (MM-Vet, LLaVA-Bench-in-the-wild, MMHal-Bench).

Configured from the environment only:

- ``VASINK_JUDGE_API_KEY`` (or ``OPENAI_API_KEY``): required;
- ``VASINK_JUDGE_BASE_URL`` (or ``OPENAI_BASE_URL``): default ``https://api.openai.com/v1``;
- ``VASINK_JUDGE_MODEL``: default ``gpt-4-0613`` (the judge MM-Vet and LLaVA-Bench used).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

KEY_VARS = ("VASINK_JUDGE_API_KEY", "OPENAI_API_KEY")
URL_VARS = ("VASINK_JUDGE_BASE_URL", "OPENAI_BASE_URL")
MODEL_VAR = "VASINK_JUDGE_MODEL"
DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4-0613"


class JudgeNotConfigured(ValueError):
    pass


def _first_env(names) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def check_configured(benchmark: str) -> None:
    if not _first_env(KEY_VARS):
        raise JudgeNotConfigured(
            f"{benchmark} is scored by an LLM judge, and no judge key is set: export {KEY_VARS[0]} (or "
            f"{KEY_VARS[1]}); optionally {URL_VARS[0]} (default {DEFAULT_URL}) and {MODEL_VAR} (default "
            f"{DEFAULT_MODEL}). Nothing was generated.")


def ask(prompt: str, max_tokens: int = 256, retries: int = 3, temperature: float = 0.0,
        system: str | None = None) -> str:
    """The judge's reply to one user message, after an optional ``system`` message (greedy unless
    ``temperature`` says otherwise)."""
    check_configured("this benchmark")
    url = (_first_env(URL_VARS) or DEFAULT_URL).rstrip("/") + "/chat/completions"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body = json.dumps({"model": os.environ.get(MODEL_VAR, DEFAULT_MODEL), "temperature": temperature,
                       "max_tokens": max_tokens, "messages": messages}).encode()
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {_first_env(KEY_VARS)}"})
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"]
        except (OSError, KeyError, ValueError):
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)
    raise RuntimeError("unreachable")
