"""Preparing a corpus from JSONL.gz with a BPE tokenizer: mixopt's Ray prepare against a naive loop.

    .venv/bin/python benchmarks/prepare_throughput.py [--size-mb 200] [--scale 1] [--cpus 2]

Inputs: about `size-mb x scale` MB of gzip-compressed JSON lines, nine domains, generated from the
embedded corpus (its byte-level shards decoded back to text, documents cut at line ends into
pieces of at most 64 KB, repeated until the size is reached) into --work, and reused by later
runs. Tokenizer: a byte-level BPE of --vocab tokens trained on a slice of the same text.

mixopt: `build_corpus` reading every document (no sampling) on a local Ray of --cpus CPUs
(started before the clock starts, its workers at the niceness of this process rather than Ray's
+15, so that both sides compete alike with whatever else runs), tasks of 8 MB of text each,
shards written to disk.
Naive: one process; for each file, each line: json.loads, Tokenizer.encode, ids appended to an
output file. Both count the ids they produce (mixopt's include one end-of-text id per document).

Memory: the proportional set size (PSS) of this process and every process under it (Ray's
daemons and workers), summed, sampled every second while mixopt prepares; shared pages are
counted once. CPU seconds of both are printed too: on a machine shared with other work, tokens
per CPU second compare the two where wall-clock rates depend on the neighbours. `--scale 10`
prepares ten times the input (skip the naive loop with --no-naive)
to show that the peak does not grow with the input.

Last line: prepare: tokens_per_s=<x> naive_tokens_per_s=<y> ratio=<x/y> peak_rss_mb=<m>
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import threading
import time
from array import array
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.cluster import init_ray  # noqa: E402
from mixopt.config import parse_config  # noqa: E402
from mixopt.data.build import build_corpus  # noqa: E402
from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.data.pieces import cut_into_pieces  # noqa: E402
from mixopt.data.prepare import prepare_corpus  # noqa: E402
from mixopt.data.sample import SampleSize  # noqa: E402

PIECE_BYTES = 64 * 1024
FILE_BYTES = 1 << 20  # compressed bytes per input file
SLICE_BYTES = 400_000  # text per domain the tokenizer is trained on


def corpus_documents(corpus_dir: Path) -> dict[str, list[str]]:
    """The embedded corpus's training text, per domain, as documents of at most 64 KB."""
    if not (corpus_dir / "manifest.parquet").is_file():
        print(f"no corpus at {corpus_dir}: preparing the default corpus there", flush=True)
        prepare_corpus(corpus_dir, source="default")
    corpus = Corpus.open(corpus_dir, verify="none")
    out = {}
    for domain in corpus.domains:
        data = b"".join(np.asarray(s, dtype=np.uint8).tobytes() for s in corpus.stream(domain, "train").shards)
        docs = []
        for document in data.split(b"\x00"):
            for piece in cut_into_pieces(document, PIECE_BYTES):
                if piece.strip():
                    docs.append(piece.decode("utf-8"))
        out[domain] = docs
    return out


def generate_inputs(documents: dict[str, list[str]], target_bytes: int, directory: Path) -> list[Path]:
    """JSON lines, gzip level 1, FILE_BYTES per file, domains in proportion to their text."""
    done = directory / ".complete"
    if done.is_file():
        return sorted(directory.rglob("*.jsonl.gz"))
    sizes = {d: sum(len(t) for t in docs) for d, docs in documents.items()}
    total = sum(sizes.values())
    for domain, docs in documents.items():
        (directory / domain).mkdir(parents=True, exist_ok=True)
        share, written, index, part = target_bytes * sizes[domain] / total, 0, 0, 0
        while written < share:
            path = directory / domain / f"part-{part:04d}.jsonl.gz"
            with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
                while raw.tell() < FILE_BYTES and written + raw.tell() < share:
                    stream.write((json.dumps({"text": docs[index % len(docs)], "id": index}) + "\n").encode())
                    index += 1
                stream.flush()
                written += raw.tell()
            part += 1
    done.write_text("ok\n")
    return sorted(directory.rglob("*.jsonl.gz"))


def train_tokenizer(documents: dict[str, list[str]], vocab: int, path: Path) -> Path:
    if path.is_file():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = []
    for docs in documents.values():
        size = 0
        for text in docs:
            texts.append(text)
            size += len(text)
            if size >= SLICE_BYTES:
                break
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))
    return path


def _process_tree(root: int) -> list[int]:
    """root and every process under it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in kB, from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0])
    return values.get("Pss", 0), values.get("Rss", 0)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class MemoryPeak:
    """The peak of the summed PSS of this process and its descendants, sampled in a thread, and
    the CPU seconds the tree used meanwhile (read from /proc)."""

    def __init__(self, every: float = 1.0):
        self.every = every
        self.peak_pss = self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self.sample()
        self.cpu_before = dict(self.cpu)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        pss = rss = 0
        for pid in _process_tree(os.getpid()):
            try:
                p, r = _memory_kb(pid)
                self.cpu[pid] = _cpu_seconds(pid)
            except (OSError, ValueError, IndexError):  # the process ended meanwhile
                continue
            pss, rss = pss + p * 1024, rss + r * 1024
        return pss, rss

    def cpu_seconds(self) -> float:
        """CPU seconds used by the process tree while sampled (processes that ended between two
        samples count up to their last sample)."""
        return sum(self.cpu.values()) - sum(self.cpu_before.get(pid, 0.0) for pid in self.cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            pss, rss = self.sample()
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        pss, rss = self.sample()  # the end state too
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)


def naive(files: list[Path], tokenizer_path: Path, out: Path) -> tuple[int, float, float]:
    """Read line, json.loads, encode, append: one process, one document at a time."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokens = 0
    started, cpu = time.perf_counter(), time.process_time()
    with open(out, "wb") as sink:
        for path in files:
            with gzip.open(path, "rb") as stream:
                for line in stream:
                    ids = tokenizer.encode(json.loads(line)["text"]).ids
                    sink.write(array("H", ids).tobytes())
                    tokens += len(ids)
    return tokens, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path("data/corpus"), help="the embedded corpus (built if missing)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/mixopt-prepare-bench"))
    parser.add_argument("--size-mb", type=float, default=200.0, help="compressed input, MB")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the input size (10: the memory check)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop (for --scale 10)")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    documents = corpus_documents(args.corpus)
    target = int(args.size_mb * args.scale * 1e6)
    started = time.perf_counter()
    files = generate_inputs(documents, target, args.work / f"inputs-{target // 1_000_000}MB")
    input_bytes = sum(f.stat().st_size for f in files)
    print(
        f"inputs: {len(files)} files, {input_bytes / 1e6:.1f} MB of JSONL.gz in {args.work} "
        f"({time.perf_counter() - started:.0f}s)",
        flush=True,
    )
    tokenizer = train_tokenizer(documents, args.vocab, args.work / f"bpe-{args.vocab}.json")
    del documents

    payload = {
        "corpus": str(args.work / "corpus"),
        "tokenizer": str(tokenizer),
        "sources": {d.name: {"paths": [str(d / "*.jsonl.gz")]} for d in sorted({f.parent for f in files})},
    }
    data = parse_config({"data": payload}).data
    os.environ["RAY_worker_niceness"] = "0"  # Ray's workers run at nice +15 by default; the naive loop does not
    init_ray(num_cpus=args.cpus)
    with MemoryPeak() as idle:
        time.sleep(1.0)
    with MemoryPeak() as memory:
        begin = time.perf_counter()
        result = build_corpus(data.corpus, data, SampleSize(train_tokens=None), force=True, executor="ray")
        seconds = time.perf_counter() - begin
    tokens = sum(result.corpus.tokens("train").values()) + sum(result.corpus.tokens("val").values())
    rate = tokens / seconds
    peak_mb = memory.peak_pss / 2**20
    cpu = memory.cpu_seconds()
    print(
        f"mixopt: {tokens:,} tokens in {seconds:.1f}s = {rate:,.0f} tokens/s on {args.cpus} CPUs "
        f"({cpu:.0f} CPU s, {tokens / max(cpu, 1e-9):,.0f} tokens per CPU s); peak PSS {peak_mb:.0f} MB "
        f"(RSS summed {memory.peak_rss / 2**20:.0f} MB; Ray idle {idle.peak_pss / 2**20:.0f} MB)",
        flush=True,
    )
    import ray

    ray.shutdown()
    if args.no_naive:
        naive_rate = float("nan")
    else:
        naive_tokens, naive_seconds, naive_cpu = naive(files, tokenizer, args.work / "naive.bin")
        naive_rate = naive_tokens / naive_seconds
        print(
            f"naive: {naive_tokens:,} tokens in {naive_seconds:.1f}s = {naive_rate:,.0f} tokens/s (1 process, "
            f"{naive_cpu:.0f} CPU s, {naive_tokens / max(naive_cpu, 1e-9):,.0f} tokens per CPU s)",
            flush=True,
        )
        (args.work / "naive.bin").unlink(missing_ok=True)
    print(
        f"prepare: tokens_per_s={rate:.0f} naive_tokens_per_s={naive_rate:.0f} "
        f"ratio={rate / naive_rate:.2f} peak_rss_mb={peak_mb:.0f}"
    )


if __name__ == "__main__":
    main()
