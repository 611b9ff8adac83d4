"""Open book: passages retrieved for each question go into the context segment of the model input.

corpus:  where passages come from (a local folder or file, a hub dataset, the training pool, precomputed
         contexts), split into passages of a stated size;
text:    the script normalisation (OpenCC t2s, NFKC, no whitespace or punctuation) and the dictionary-free
         character bigram terms BM25 matches on;
index:   a bm25s index, built once and cached under HF_HOME by the corpus's content hash and parameters;
leak:    every passage checked against every validation and test item before anything is trained;
contexts: the same retrieval at training, evaluation and predict time, recorded per item.
"""
