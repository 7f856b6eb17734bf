"""Optional LLM answer extraction through any OpenAI-compatible chat endpoint (off by default).

The rules in `answers` read tagged, boxed or "the answer is" answers; a judge helps where a model states
its answer loosely (MathVista's official path extracts with an LLM). The judge only *extracts* the final
answer; scoring stays the benchmark's own rule, applied to `<answer>{extracted}</answer>`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..utils.errors import UserError

PROMPT = ("Below are a question and a model's response. Reply with the model's final answer only: the option "
          "letter for a multiple-choice question, otherwise the number or short phrase it concluded with, or "
          "NONE if it gave no answer.\n\nQuestion:\n{question}\n\nResponse:\n{response}\n\nFinal answer:")


class JudgeError(UserError):
    pass


@dataclass(frozen=True)
class Judge:
    url: str  # base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1
    model: str
    timeout: float = 120.0

    def extract(self, question: str, response: str) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": 64,
                "messages": [{"role": "user", "content": PROMPT.format(question=question, response=response)}]}
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                answer = json.load(reply)["choices"][0]["message"]["content"].strip()
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as err:
            raise JudgeError(f"The judge at {self.url} (model {self.model}) did not answer: {err}. Check the URL "
                             "and OPENAI_API_KEY, or run without --judge-url (rule-based extraction).") from None
        return "" if answer.upper() == "NONE" else answer

    def judged(self, question: str, response: str) -> str:
        """The response as the benchmark's rules should read it: the judge's extraction, tagged."""
        return f"<answer>{self.extract(question, response)}</answer>"
