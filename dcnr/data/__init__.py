"""Vocabularies and datasets (SPEC §11).

Owns: reading text corpora, training byte-level BPE vocabularies with `tokenizers`,
tokenized datasets as flat token arrays with train/validation splits, the
deterministic batch function of (dataset, seed, step), and loading the vocabularies
text nodes name (`vocabularies.Vocabularies`). May import torch and
`tokenizers`. Must never import the runtime, the network spec or any transport.
"""

from dcnr.data.corpus import read_corpus, stdlib_corpus
from dcnr.data.dataset import TokenDataset
from dcnr.data.vocab import train_vocabulary

__all__ = ["TokenDataset", "read_corpus", "stdlib_corpus", "train_vocabulary"]
