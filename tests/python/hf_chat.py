"""Prints transformers' apply_chat_template rendering of conversations as a JSON list.

Usage: hf_chat.py TOKENIZER_DIR  (reads [{"messages": [...], "enable_thinking": bool}, ...] on stdin)
"""
import json
import sys

from transformers import AutoTokenizer


def main() -> None:
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    cases = json.load(sys.stdin)
    print(json.dumps([
        tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=True,
                                enable_thinking=c["enable_thinking"])
        for c in cases
    ]))


if __name__ == "__main__":
    main()
