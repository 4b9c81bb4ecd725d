"""The only code that imports pyserini or jnius: JVM selection and boot (lazily, on first use,
never at import), Anserini indexing, Pyserini search, BM25 and trec_eval."""
