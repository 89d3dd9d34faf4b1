"""Stage 17: `spiral serve` answers the official openai client (complete, stream, concurrent)
and refuses bad requests with OpenAI-shaped 4xx errors while staying up."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from spiral.generate import generate  # noqa: E402
from spiral.inference.serve import build_app, load_model  # noqa: E402
from spiral.inference.serve_cli import ServerThread  # noqa: E402

pytestmark = pytest.mark.stage17


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spiral.models.pretrained import train_tiny_standin

    folder = tmp_path_factory.mktemp("standin") / "tiny"
    train_tiny_standin(folder, steps=5)
    return folder


@pytest.fixture(scope="module")
def server(standin: Path) -> Any:
    model, tok, name = load_model(str(standin))
    with ServerThread(build_app(model, tok, name)) as url:
        yield url, model, tok, name


def client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_openai_client_completes_greedily_as_generate_does(server: Any) -> None:
    url, model, tok, name = server
    r = client(url).completions.create(model=name, prompt="ROMEO:", max_tokens=12,
                                       temperature=0)
    want = tok.decode(generate(model, tok.encode("ROMEO:"), 12, np.random.default_rng(0),
                               temperature=0))
    assert r.choices[0].text == want and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 6 and r.usage.completion_tokens == 12
    assert [m.id for m in client(url).models.list().data] == [name]


def test_streaming_sends_the_same_text_in_pieces(server: Any) -> None:
    url, _, _, name = server
    c = client(url)
    whole = c.completions.create(model=name, prompt="KING", max_tokens=10, temperature=0.8,
                                 seed=7).choices[0].text
    chunks = list(c.completions.create(model=name, prompt="KING", max_tokens=10,
                                       temperature=0.8, seed=7, stream=True))
    assert len(chunks) >= 2 and "".join(ch.choices[0].text for ch in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_stop_string_ends_the_text_before_it(server: Any) -> None:
    url, _, _, name = server
    text = client(url).completions.create(model=name, prompt="A", max_tokens=20,
                                          temperature=0).choices[0].text
    stop = text[3:5]
    r = client(url).completions.create(model=name, prompt="A", max_tokens=20, temperature=0,
                                       stop=stop)
    assert r.choices[0].text == text[:text.index(stop)] and r.choices[0].finish_reason == "stop"


def test_concurrent_requests_are_each_answered_as_if_alone(server: Any) -> None:
    url, _, _, name = server
    c = client(url)
    # a shared prefix: the prefix cache shares its blocks, copy on write
    prompts = [f"KING: {w}" for w in ("First", "Second", "Third", "Fourth", "Fifth", "Sixth")]
    alone = [c.completions.create(model=name, prompt=p, max_tokens=15, temperature=0)
             .choices[0].text for p in prompts]
    got: dict[int, str] = {}

    def ask(i: int) -> None:
        got[i] = c.completions.create(model=name, prompt=prompts[i], max_tokens=15,
                                      temperature=0).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [got[i] for i in range(len(prompts))] == alone
    health = httpx.get(f"{url}/health").json()
    assert health["max_blocks_used"] > 2 and health["running"] == 0


@pytest.mark.parametrize("body, status, code, needle", [
    ('{"model": "tiny", "prompt": "hi"', 400, None, "not valid JSON"),
    ({"model": "gpt-4", "prompt": "hi"}, 404, "model_not_found", "does not exist"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": 500}, 400, "context_length_exceeded",
     "maximum context length"),
    ({"model": "tiny", "prompt": "hi", "temperature": -0.5}, 400, None, "temperature"),
    ({"model": "tiny", "prompt": ""}, 400, None, "prompt"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": "ten"}, 400, None, "max_tokens"),
    ([1, 2], 400, None, "JSON object"),
])
def test_bad_requests_get_openai_shaped_errors_and_the_server_stays_up(
        server: Any, body: Any, status: int, code: str | None, needle: str) -> None:
    url, _, _, name = server
    raw = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(f"{url}/v1/completions", content=raw.replace('"tiny"', json.dumps(name)),
                   headers={"content-type": "application/json"})
    err = r.json()["error"]
    assert r.status_code == status and needle in err["message"] and err["code"] == code
    assert err["type"] == "invalid_request_error"
    ok = client(url).completions.create(model=name, prompt="hi", max_tokens=2)
    assert len(ok.choices[0].text) > 0 or ok.usage.completion_tokens == 2


def test_the_client_raises_on_errors_and_chat_says_why(server: Any) -> None:
    url, _, _, name = server
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(url).completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client(url).completions.create(model=name, prompt="x", max_tokens=1, temperature=-1)
    with pytest.raises(openai.NotFoundError, match="chat template"):
        client(url).chat.completions.create(model=name, messages=[{"role": "user",
                                                                   "content": "hi"}])


def test_a_bounded_load_test_completes_every_request(server: Any) -> None:
    from spiral.inference.loadtest import load_test

    url, _, _, name = server
    out = load_test(url, name, [f"Line {i}" for i in range(9)], n_clients=3, max_tokens=8)
    assert out["completed"] == 9 and out["errors"] == 0
    assert out["completion_tokens"] == 9 * 8 and out["p99_s"] >= out["p50_s"] > 0
    bad = load_test(url, "not-served", ["x", "y"], n_clients=2, max_tokens=2)
    assert bad["errors"] == 2 and bad["completed"] == 0  # errors are counted, not hidden
    with pytest.raises(ValueError, match="loopback"):
        load_test("http://example.com", name, ["x"])



def test_a_run_directory_with_a_character_tokenizer_is_served(tmp_path: Path) -> None:
    from spiral import checkpoint
    from spiral.inference.serve import ApiError, parse_completion
    from spiral.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=5, context_length=16, n_layers=1, n_heads=1, d_model=8)
    checkpoint.save(tmp_path / "checkpoint.safetensors", GPT(cfg, rng=np.random.default_rng(0)))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": "gpt", "model_config": cfg.to_dict(), "vocab": "abc \n"}))
    model, tok, name = load_model(str(tmp_path))
    assert name == tmp_path.name and model.context_length == 16
    req, stop, stream = parse_completion({"model": name, "prompt": "ab", "max_tokens": 3},
                                         name, tok, model.context_length)
    assert req.prompt == tok.encode("ab") and stop == [] and not stream
    with pytest.raises(ApiError, match="cannot be tokenized"):
        parse_completion({"model": name, "prompt": "xyz"}, name, tok, model.context_length)
    with pytest.raises(RuntimeError, match="no pretrained model"):
        load_model(str(tmp_path / "nothing"))
