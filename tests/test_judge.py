"""The optional LLM judge, against a local fake OpenAI-compatible endpoint."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from functional_heads.evaluation.benchmarks import Example, get_benchmark
from functional_heads.evaluation.judge import Judge, JudgeError


@pytest.fixture()
def endpoint():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            reply = {"choices": [{"message": {"role": "assistant", "content": " B \n"}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def test_judge_extracts_and_the_benchmark_rule_scores(endpoint):
    url, seen = endpoint
    judge = Judge(url, "some-model")
    bench = get_benchmark("mmstar")
    example = Example("1", None, "Which? Options: A: x, B: y", "B")
    loose = "Looking at it, I would go with the second one, y."
    assert bench.score(example, loose).score == 0.0  # the rules find no letter
    assert bench.score(example, judge.judged(example.prompt, loose)).score == 1.0
    path, body = seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "some-model" and body["temperature"] == 0
    assert loose in body["messages"][0]["content"]


def test_unreachable_judge_says_what_to_do():
    with pytest.raises(JudgeError, match="did not answer"):
        Judge("http://127.0.0.1:9/v1", "m", timeout=2).extract("q", "r")
