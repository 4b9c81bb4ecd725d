"""Run B against run A over several collections whose runs live in different outputs (e.g. leave-one-out pairs
trained by separate ``generalize`` runs): each set's test and the stratified one across them.

    python tools/probes/across_sets.py <set> <run A> <run B> [<set> <run A> <run B> ...] [--split test]

``generalize`` prints the same block itself when one output holds several held-out sets."""
import argparse

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.lucene.significance import compare_across, compare_runs

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("triples", nargs="+", help="<set> <run A> <run B>, repeated")
parser.add_argument("--split", default="test")
parser.add_argument("--measure", default="nDCG@10")
args = parser.parse_args()
if len(args.triples) % 3:
    parser.error("give <set> <run A> <run B> triples")
pairs = []
for i in range(0, len(args.triples), 3):
    name, run_a, run_b = args.triples[i:i + 3]
    qrels = load_beir(resolve_beir_folder(name), split=args.split, need_qrels=True).qrels
    pairs.append((qrels, run_a, run_b))
    t = compare_runs(qrels, run_a, run_b, args.measure)
    print(f"{name}: A {t.mean_a:.4f}, B {t.mean_b:.4f}, B - A {t.difference:+.4f}, p = {t.p_value:.3g} "
          f"(B better on {t.wins}, worse on {t.losses} of {t.queries})")
t = compare_across(pairs, args.measure)
print(f"across {len(pairs)} sets (macro): A {t.mean_a:.4f}, B {t.mean_b:.4f}, B - A {t.difference:+.4f}, "
      f"p = {t.p_value:.3g} (B better on {t.wins}, worse on {t.losses} of {t.queries})")
