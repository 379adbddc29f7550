"""Prints the Hugging Face `tokenizers` encoding of each argument as a JSON list of id lists.

Usage: hf_tokenize.py TOKENIZER_JSON TEXT [TEXT ...]
Special tokens in the text are parsed as special tokens; no BOS/EOS is added.
"""
import json
import sys

from tokenizers import Tokenizer


def main() -> None:
    tok = Tokenizer.from_file(sys.argv[1])
    print(json.dumps([tok.encode(t, add_special_tokens=False).ids for t in sys.argv[2:]]))


if __name__ == "__main__":
    main()
