"""Corpus preparation (sources, tokenizer, shards, manifest) and reading (memory-mapped shards)."""

from mixopt.data.corpus import Corpus, TokenStream

__all__ = ["Corpus", "TokenStream"]
