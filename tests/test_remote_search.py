"""RemoteSearch against a stub of Search-R1's retrieval server: the real BM25 over a tiny corpus behind the same
POST /retrieve API, served from a thread on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from icrl_lite.tools import BM25Search, SearchConfig, build_search
from icrl_lite.tools.remote import RemoteSearch, RemoteSearchError

CORPUS = [  # FlashRAG records, as in Search-R1's wiki-18.jsonl
    {"id": "0", "contents": '"Paris"\nParis is the capital and largest city of France.'},
    {"id": "1", "contents": '"Berlin"\nBerlin is the capital of Germany.'},
    {"id": "2", "contents": '"Mount Everest"\nMount Everest is the highest mountain above sea level.'},
    {"id": "3", "contents": '"Seine"\nThe Seine is a river that flows through Paris.'},
]


class Stub:
    """The retrieval server: answers as `retrieval_server.py` does, counts requests, and can misbehave on cue."""

    def __init__(self, url: str):
        self.url = url
        self.bm25 = BM25Search(CORPUS, top_k=3)
        self.requests: list[dict] = []
        self.return_scores: bool | None = None  # None: as the request asks; False: documents only, as without it
        self.reply: bytes | None = None  # a fixed (malformed) answer
        self.delays: list[float] = []  # seconds to stall the next requests, one per request

    def answer(self, request: dict) -> bytes:
        self.requests.append(request)
        if self.delays:
            time.sleep(self.delays.pop(0))
        if self.reply is not None:
            return self.reply
        scores = request.get("return_scores", False) if self.return_scores is None else self.return_scores
        result = []
        for hits in self.bm25.batch_search(request["queries"], request["topk"]):
            docs = [{"id": hit["id"], "contents": f'"{hit["title"]}"\n{hit["text"]}'} for hit in hits]
            result.append([{"document": d, "score": h["score"]} for d, h in zip(docs, hits)] if scores else docs)
        return json.dumps({"result": result}).encode()


@pytest.fixture(scope="module")
def served():
    """(holder, url) of a server that answers with holder["stub"]; one server for the tests of this file."""
    holder = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = holder["stub"].answer(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder, f"http://127.0.0.1:{server.server_address[1]}/retrieve"
    server.shutdown()
    server.server_close()


@pytest.fixture
def stub(served):
    """A fresh stub behind the server."""
    holder, url = served
    holder["stub"] = Stub(url)
    return holder["stub"]


def remote(stub: Stub, **kwargs) -> RemoteSearch:
    kwargs = {"top_k": 3, "timeout": 2.0, "backoff": 0.0, **kwargs}
    return RemoteSearch(stub.url, **kwargs)


def test_the_observation_is_the_local_bm25_tools_on_the_same_corpus(stub):
    local, tool = BM25Search(CORPUS, top_k=3).as_tool(), remote(stub).as_tool()
    for query in ("capital of France", "highest mountain", "river Paris"):
        observation = tool.run(query)
        assert observation == local.run(query)
        assert observation.startswith("Doc 1(Title: ")
    assert tool.run("zebra") == local.run("zebra") == "No results found."


def test_the_request_is_search_r1s_and_a_batch_is_one_request(stub):
    search = remote(stub, top_k=2)
    before = len(stub.requests)
    results = search.batch_search(["capital of France", "highest mountain", "capital of Germany"])
    assert len(stub.requests) == before + 1
    assert stub.requests[-1] == {"queries": ["capital of France", "highest mountain", "capital of Germany"],
                                 "topk": 2, "return_scores": True}
    assert [docs[0]["title"] for docs in results] == ["Paris", "Mount Everest", "Berlin"]
    assert all(len(docs) <= 2 and "score" in docs[0] for docs in results)


def test_cached_queries_are_not_asked_again(stub):
    search = remote(stub)
    first = search.search("capital of France")
    before = len(stub.requests)
    assert search.search("capital of France") == first
    search.batch_search(["capital of France", "capital of France"])
    assert len(stub.requests) == before
    search.batch_search(["capital of France", "highest mountain"])
    assert stub.requests[-1]["queries"] == ["highest mountain"]  # only the miss is asked
    search.search("capital of France", k=1)  # another k is another key
    assert len(stub.requests) == before + 2


def test_an_answer_without_scores_is_read_too(stub):
    stub.return_scores = False
    docs = remote(stub).search("capital of Germany")
    assert docs[0] == {"id": "1", "title": "Berlin", "text": "Berlin is the capital of Germany."}


def test_an_unreachable_server_fails_at_construction_with_the_fix():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/retrieve"
    with pytest.raises(RemoteSearchError, match="cannot reach the retrieval server at " + url) as e:
        RemoteSearch(url, timeout=1.0)
    assert "retrieval_server.py" in str(e.value) and "search.backend=bm25" in str(e.value)


def test_a_malformed_answer_is_quoted_in_the_error(stub):
    stub.reply = b"<html>Not the retriever</html>"
    with pytest.raises(RemoteSearchError, match="not Search-R1's .*<html>Not the retriever</html>"):
        remote(stub)
    stub.reply = json.dumps({"result": [[{"title": "no text field"}]]}).encode()
    with pytest.raises(RemoteSearchError, match="no text field"):
        remote(stub)


def test_a_failed_search_is_an_error_observation_and_a_warning(stub):
    tool = remote(stub, retries=0).as_tool()
    stub.reply = b'{"result": []}'
    with pytest.warns(RuntimeWarning, match="remote search failed"):
        assert tool.run("capital of France").startswith("error: RemoteSearchError: the retrieval server at ")


def test_a_timed_out_request_is_retried(stub):
    search = remote(stub, timeout=2.0, retries=1)  # room for the retry's answer on a busy machine
    stub.delays = [3.0]  # the next request stalls past the timeout; its retry is answered at once
    before = len(stub.requests)
    assert search.search("capital of France")[0]["title"] == "Paris"
    assert len(stub.requests) == before + 2


def test_a_server_that_keeps_timing_out_raises_after_the_retries(stub):
    search = remote(stub, timeout=0.1, retries=1)
    stub.delays = [0.3, 0.3]
    with pytest.raises(RemoteSearchError, match="tried 2 times, timeout 0.1 s"):
        search.search("capital of France")


def test_search_backend_remote_builds_the_tool_and_checks_its_url(stub):
    tool = build_search(SearchConfig(backend="remote", remote_url=stub.url, top_k=2), corpus=None)
    assert tool.run("highest mountain").startswith("Doc 1(Title: Mount Everest) ")
    assert stub.requests[-1]["topk"] == 2
    with pytest.raises(ValueError, match="search.remote_url='127.0.0.1:8000/retrieve'.*http://"):
        SearchConfig(backend="remote", remote_url="127.0.0.1:8000/retrieve").validate()
