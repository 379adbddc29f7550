"""Text in and out on a Qwen3 GGUF whose tokenizer is llama.cpp's: the `tokenizer.ggml.*`
arrays and chat template that llama.cpp's `convert_hf_to_gguf.py` writes, without
`tokenizer.huggingface.json` (llama_vocab.py puts them on our `--split` base of the same
checkpoint). `orthrus run` with a text prompt and with `--chat`, and orthrus-server, paired
with the head, give what Hugging Face's token ids give.

Needs the binaries; scripts/test.sh builds them before running pytest.
"""
import json
import subprocess
import sys

import pytest
from gguf import GGUFReader

from test_server import BIN, FIXTURE, REPO, Server

HERE = REPO / "tests" / "python"
TOKENIZER_JSON = REPO / "models" / "qwen3-tokenizer" / "tokenizer.json"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    ours = d / "base.gguf"
    subprocess.run([str(BIN / "orthrus-convert"), str(FIXTURE), "-o", str(ours), "--type", "q8_0", "--split"],
                   check=True, capture_output=True)
    llama = d / "llama-base.gguf"
    subprocess.run([sys.executable, str(HERE / "llama_vocab.py"), str(FIXTURE), str(llama), "--onto", str(ours)],
                   check=True)
    return llama, d / "base.head.gguf"


def hf_ids(text):
    out = subprocess.run([sys.executable, str(HERE / "hf_tokenize.py"), str(TOKENIZER_JSON), text],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]


def run(model, head, *args):
    out = subprocess.run([str(BIN / "orthrus"), "run", "-m", str(model), "--head", str(head), "-n", "16",
                          "--ignore-eos", "--json", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_file_has_llama_cpps_tokenizer_only(pair):
    llama, _ = pair
    keys = GGUFReader(llama).fields
    assert "tokenizer.huggingface.json" not in keys
    assert keys["tokenizer.ggml.pre"].contents() == "qwen2"
    assert keys["tokenizer.ggml.model"].contents() == "gpt2"


@pytest.mark.parametrize("text", ["Hello, 世界! 🦀 12345\n\n  <think>", "def f(x):\n    return x"])
def test_text_prompt_encodes_like_hugging_face(pair, text):
    llama, head = pair
    by_text = run(llama, head, "-p", text)
    by_ids = run(llama, head, "--prompt-ids", ",".join(map(str, hf_ids(text))))
    assert by_text["stats"]["prompt_tokens"] == by_ids["stats"]["prompt_tokens"]
    assert by_text["tokens"] == by_ids["tokens"]
    assert by_text["text"] and by_text["text"] == by_ids["text"]


def chat_prompt(messages, thinking):
    """transformers' rendering of the conversation, as token ids."""
    out = subprocess.run([sys.executable, str(HERE / "hf_chat.py"), str(TOKENIZER_JSON.parent)],
                         input=json.dumps([{"messages": messages, "enable_thinking": thinking}]),
                         check=True, capture_output=True, text=True)
    return hf_ids(json.loads(out.stdout)[0])


def test_chat_renders_and_encodes_like_transformers(pair):
    llama, head = pair
    for args, msgs, thinking in [
        (["-p", "Hi there", "--chat"], [{"role": "user", "content": "Hi there"}], False),
        (["-p", "Name a prime.", "--chat", "--think", "--system", "Be brief."],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}], True),
    ]:
        chat = run(llama, head, *args)
        ids = run(llama, head, "--prompt-ids", ",".join(map(str, chat_prompt(msgs, thinking))))
        assert chat["stats"]["prompt_tokens"] == ids["stats"]["prompt_tokens"]
        assert chat["tokens"] == ids["tokens"] and chat["text"] == ids["text"]


def test_server_serves_the_file(pair, tmp_path):
    llama, head = pair
    s = Server(llama, tmp_path / "server.log", "--head", str(head))
    try:
        msgs = [{"role": "user", "content": "Hi there"}]
        r = s.client().chat.completions.create(
            model="llama-base", messages=msgs, max_tokens=16, temperature=0,
            extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}})
        want = run(llama, head, "--prompt-ids", ",".join(map(str, chat_prompt(msgs, False))))
        assert r.usage.prompt_tokens == want["stats"]["prompt_tokens"]
        assert r.choices[0].message.content == want["text"]
    finally:
        s.stop()
