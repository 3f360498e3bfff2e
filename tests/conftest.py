"""Shared pytest fixtures: one prepared fixture corpus, one local Ray cluster and one BPE tokenizer
per session."""

import logging
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory) -> Path:
    """The committed fixture corpus (tests/fixtures/corpus: real text, every domain), prepared once
    for the whole session. Tests read it; a test that damages a corpus prepares its own."""
    from mixopt.data.prepare import prepare_corpus

    directory = tmp_path_factory.mktemp("corpus") / "fixture"
    prepare_corpus(directory, source="fixture")
    return directory


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster of 2 CPUs for the whole test session (no dashboard).

    `ray.init(local_mode=True)` no longer exists, and a bare `ray.init()` can hang on a stale
    cluster file; address="local" always starts a fresh cluster."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def bpe(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (vocabulary 2000, <|endoftext|>) trained at test time on the fixture
    corpus (tests/fixtures/corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = Path(__file__).parent / "fixtures" / "corpus"
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*.txt"))]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path
