"""WordNet 3.0's synsets as a JSONL corpus of general English text, for training an SAE offline.

The SAEs trained here on the shipped collections' text tie their vocabulary twins out of domain, while
a public SAE trained on general text beats its twin; this machine reaches no web corpus, but Debian's
``wordnet-base`` package holds every synset's lemmas, definition and example sentences (about 117,000
entries over every domain of the language, under the WordNet 3.0 license). One record per synset:
``{"_id": "wn-n-00001740", "text": "entity: that which is perceived or known ..."}``.

    apt-get install wordnet-base
    python tools/corpora/wordnet_glosses.py --output runs/corpora/wordnet.jsonl
    python -m splare_pyserini.train_sae --input runs/corpora/wordnet.jsonl --layer 6 --d-sae 8192 --k 32 \
        --steps 5000 --output runs/wordnet-sae
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

PARTS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def parse_line(line: str, where: str) -> tuple[str, str] | None:
    """(synset id, text) of one ``data.<pos>`` line; None for the license header (lines that start with spaces)."""
    if line.startswith(" ") or not line.strip():
        return None
    fields, bar, gloss = line.partition(" | ")
    if not bar:
        raise ValueError(f"{where}: no ' | ' before the gloss")
    parts = fields.split()
    try:
        offset, ss_type, n_words = parts[0], parts[2], int(parts[3], 16)
        lemmas = [parts[4 + 2 * i].replace("_", " ") for i in range(n_words)]
    except (IndexError, ValueError) as error:
        raise ValueError(f"{where}: malformed synset fields ({error})") from None
    # Adjective lemmas may carry a syntactic marker such as "(p)"; it is not text.
    lemmas = [lemma.split("(")[0] for lemma in lemmas]
    unique = list(dict.fromkeys(lemma for lemma in lemmas if lemma))
    text = f"{', '.join(unique)}: {gloss.strip()}"
    return f"wn-{ss_type}-{offset}", text


def synsets(folder: Path) -> Iterator[tuple[str, str]]:
    for part in PARTS:
        path = folder / f"data.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (apt-get install wordnet-base)")
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                record = parse_line(line, f"{path}:{lineno}")
                if record is not None:
                    yield record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet", help="folder with data.noun, data.verb, ...")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for synset_id, text in synsets(Path(args.wordnet)):
                handle.write(json.dumps({"_id": synset_id, "text": text}, ensure_ascii=False) + "\n")
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    print(f"{count} synsets -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
