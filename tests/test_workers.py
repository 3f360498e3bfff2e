"""workers/: proxy model, CRN sampling, packed training, evaluation, divergence and Ray tasks.

Tiny specs (few dozen steps, short sequences) on three domains of the committed fixture corpus.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mixopt.data.corpus import Corpus
from workers.data import MixtureSampler, batch_counts, eval_windows
from workers.loop import lr_factor
from workers.model import GPT, PackedGPT, init_state
from workers.presets import ModelConfig, load_preset
from workers.proxies import PackedRun, train_proxies
from workers.spec import ProxySpec

DOMAINS = ["code", "legal", "speeches"]
TINY = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}


@pytest.fixture(scope="module")
def corpus_dir(fixture_corpus) -> str:
    """The committed fixture corpus (real text); the tests train on three of its domains."""
    return str(fixture_corpus)


def tiny_spec(**changes) -> ProxySpec:
    base = dict(preset=TINY, tokens=30 * 8 * 32, batch_size=8, seq_len=32, lr=3e-3, eval_tokens=512,
                curve_every=5, device="cpu")
    base.update(changes)
    return ProxySpec(**base)


def assert_close(a, b, rel=1e-4):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-3)), f"max diff {np.max(np.abs(a - b))}"


def losses(result):
    return [result["loss"][d] for d in DOMAINS]


# -- spec and presets -----------------------------------------------------------------------------


def test_spec_round_trips_and_names_bad_fields():
    spec = ProxySpec(preset="cpu-0.5m", tokens=2_400_000, batch_size=16, seq_len=256, lr=3e-3,
                     eval_tokens=65536, device="auto", compile=False)
    assert ProxySpec(**dataclasses.asdict(spec)) == spec
    assert spec.steps == 2_400_000 // (16 * 256)
    for field, value in [("tokens", 0), ("lr", -1.0), ("lr", float("nan")), ("batch_size", 2.5),
                         ("schedule", "step"), ("device", "tpu"), ("warmup", 1.0), ("beta2", 1.0),
                         ("preset", 3), ("compile", "yes"), ("average", "swa"), ("average_window", 0.0),
                         ("average_window", 1.5), ("cooldown", -0.1)]:
        with pytest.raises(ValueError, match=field):
            ProxySpec(**{field: value})
    with pytest.raises(ValueError, match="tokens"):
        ProxySpec(tokens=100, batch_size=16, seq_len=256)   # less than one step


def test_presets_sizes_and_inline_dims():
    small = load_preset("cpu-0.5m", 256)
    assert 0.4e6 < small.num_params() < 0.6e6
    assert sum(t.numel() for t in GPT(small).parameters()) == small.num_params()
    regmix = load_preset("regmix-1m", 50_000)
    assert (regmix.n_layer, regmix.n_head, regmix.d_model, regmix.d_ff, regmix.vocab_size) == (2, 8, 256, 512, 50_000)
    assert 13e6 < load_preset("15m", 256).num_params() < 17e6
    assert load_preset(TINY, 256) == ModelConfig(vocab_size=256, **TINY)
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("nope", 256)
    with pytest.raises(ValueError, match="multiple of n_head"):
        load_preset({**TINY, "n_head": 3}, 256)


def test_lr_schedule_warms_up_then_decays():
    spec = tiny_spec(warmup=0.1, final_lr=0.1)
    factors = [lr_factor(s, 100, spec) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1)


def test_wsd_holds_the_peak_then_falls_linearly_and_spans_linear_at_full_cooldown():
    spec = tiny_spec(schedule="wsd", warmup=0.1, cooldown=0.3, final_lr=0.0)
    factors = [lr_factor(s, 100, spec) for s in range(100)]
    assert factors[9] == 1.0 and factors[69] == 1.0                   # stable from warmup to 70 steps
    falls = np.diff(factors[70:])
    assert np.allclose(falls, falls[0]) and falls[0] < 0              # a straight line ...
    assert factors[-1] == 0.0                                         # ... to final_lr at the last step
    full = tiny_spec(schedule="wsd", warmup=0.1, cooldown=0.9, final_lr=0.05)
    linear = tiny_spec(schedule="linear", warmup=0.1, final_lr=0.05)
    assert [lr_factor(s, 100, full) for s in range(100)] == [lr_factor(s, 100, linear) for s in range(100)]


# -- sampling ------------------------------------------------------------------------------------


def test_batch_counts_are_systematic_and_shared_across_mixtures():
    weights = np.array([0.55, 0.0, 0.3, 0.15])
    counts = batch_counts(weights, 16, 400, seed=7)
    assert (counts.sum(axis=1) == 16).all()
    assert (counts[:, 1] == 0).all()                                   # zero weight: never drawn
    assert (counts >= np.floor(16 * weights)).all() and (counts <= np.ceil(16 * weights)).all()
    drift = np.abs(counts.cumsum(axis=0) - np.outer(np.arange(1, 401), 16 * weights))
    assert drift.max() <= 3                                            # low discrepancy over time
    assert (batch_counts(weights, 16, 50, seed=7) == counts[:50]).all()
    assert not (batch_counts(weights, 16, 400, seed=8) == counts).all()


def test_same_seed_draws_the_same_kth_window_of_each_domain(corpus_dir):
    corpus = Corpus.open(corpus_dir)
    streams = [corpus.stream(d) for d in DOMAINS]
    a = MixtureSampler(streams, DOMAINS, np.array([0.5, 0.25, 0.25]), 3, 8, 32, 20)
    b = MixtureSampler(streams, DOMAINS, np.array([0.2, 0.2, 0.6]), 3, 8, 32, 20)
    for j in range(3):
        n = min(len(a.uniforms[j]), len(b.uniforms[j]))
        assert n > 0 and np.array_equal(a.uniforms[j][:n], b.uniforms[j][:n])
    c = MixtureSampler(streams, DOMAINS, np.array([0.5, 0.25, 0.25]), 4, 8, 32, 20)
    assert not np.array_equal(a.uniforms[0][:10], c.uniforms[0][:10])
    first = a.batch(0)
    assert first.shape == (8, 33) and first.dtype == np.int64
    rows_code = a.counts[0, 0]
    assert np.array_equal(first[:rows_code], streams[0].windows(a.uniforms[0][:rows_code], 33))


# -- model ---------------------------------------------------------------------------------------


def test_packed_model_matches_single_models_forward_and_gradients():
    cfg = load_preset("cpu-0.5m", 256)
    seeds = [0, 1, 0]
    packed = PackedGPT(cfg, [init_state(cfg, s) for s in seeds])
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (3, 2, 17), generator=gen)
    losses_packed = packed.loss(batch[..., :-1], batch[..., 1:])
    packed.backward(losses_packed)
    for p, seed in enumerate(seeds):
        model = GPT(cfg, seed=seed)
        loss = model(batch[p, :, :-1], batch[p, :, 1:])
        loss.backward()
        assert losses_packed[p].item() == pytest.approx(loss.item(), rel=1e-5)
        grad = torch.cat([model.get_parameter(n).grad.reshape(-1) for n in packed.params])
        assert torch.allclose(packed.grad[p], grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(packed.state(0)["head.weight"], packed.state(2)["head.weight"])   # same seed, same init


# -- training ------------------------------------------------------------------------------------


def test_packing_does_not_change_training(corpus_dir):
    # lr 1e-3: at higher rates on batches this tiny, Adam turns float noise in near-zero gradients
    # into whole updates after a loss spike, and any two implementations drift apart by ~1e-3
    spec = tiny_spec(preset="cpu-0.5m", tokens=24 * 8 * 32, lr=1e-3)
    mixtures = np.array([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    seeds = [0, 0, 1]
    packed = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, spec, threads=1, packed=True)
    naive = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, spec, threads=1, packed=False)
    for a, b in zip(packed, naive):
        assert a["status"] == b["status"] == "ok"
        assert a["steps"] == b["steps"] == 24 and a["tokens"] == b["tokens"] == 24 * 8 * 32
        assert len(a["curve"]) == len(b["curve"]) == 5
        assert_close(a["curve"], b["curve"], rel=1e-4)
        assert_close(losses(a), losses(b), rel=1e-4)
    assert packed[0]["curve"][-1] < packed[0]["curve"][0] - 0.5       # it learns
    assert packed[0]["curve"] != packed[1]["curve"]                   # mixtures matter


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_proxy_trains_to_the_same_bits_whatever_is_packed_with_it(corpus_dir, compiled):
    """Common random numbers hold exactly: a mixture's losses do not depend on the pack it shares
    (validate packs 5 mixtures, a resumed study repacks what is left), nor, compiled, on the run."""
    spec = tiny_spec(preset="cpu-0.5m", tokens=40 * 8 * 32, compile=compiled)
    mixtures = np.array([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    packs = [train_proxies(corpus_dir, DOMAINS, mixtures[:size], [0] * size, spec, threads=2) for size in (1, 3, 5, 5)]
    for pack in packs[1:]:
        assert pack[0]["curve"] == packs[0][0]["curve"] and pack[0]["loss"] == packs[0][0]["loss"]
    assert packs[2][1]["loss"] == packs[1][1]["loss"] and packs[3][4]["loss"] == packs[2][4]["loss"]


def test_same_seed_and_mixture_give_identical_losses(corpus_dir):
    spec = tiny_spec()
    mixtures = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    first = train_proxies(corpus_dir, DOMAINS, mixtures, [5, 6], spec, threads=1)
    again = train_proxies(corpus_dir, DOMAINS, mixtures, [5, 6], spec, threads=1)
    for a, b in zip(first, again):
        assert a["curve"] == b["curve"] and a["loss"] == b["loss"]
    other_seed = train_proxies(corpus_dir, DOMAINS, mixtures[:1], [9], spec, threads=1)[0]
    assert other_seed["curve"] != first[0]["curve"]
    # naive (one at a time) is deterministic too
    naive = [train_proxies(corpus_dir, DOMAINS, mixtures[:1], [5], spec, threads=1, packed=False)[0]
             for _ in range(2)]
    assert naive[0]["curve"] == naive[1]["curve"] and naive[0]["loss"] == naive[1]["loss"]


def test_divergent_proxy_is_frozen_and_does_not_poison_the_pack(corpus_dir):
    spec = tiny_spec()
    mixtures = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]])
    seeds = [0, 1, 2]
    results = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, spec, threads=1, lr_scales=[1.0, math.inf, 1.0])
    assert [r["status"] for r in results] == ["ok", "diverged", "ok"]
    bad = results[1]
    assert bad["diverged_at"] is not None and bad["steps"] < spec.steps and bad["tokens"] < spec.tokens
    assert all(math.isnan(x) for x in losses(bad))
    alone = train_proxies(corpus_dir, DOMAINS, mixtures[[0, 2]], [0, 2], spec, threads=1)
    for r, ref in zip([results[0], results[2]], alone):
        assert all(math.isfinite(x) for x in losses(r))
        assert_close(losses(r), losses(ref), rel=1e-5)
        assert_close(r["curve"], ref["curve"], rel=1e-5)
    naive = train_proxies(corpus_dir, DOMAINS, mixtures[1:2], [1], spec, threads=1, packed=False, lr_scales=[math.inf])
    assert naive[0]["status"] == "diverged"


def test_every_proxy_is_scored_on_the_same_held_out_windows(corpus_dir):
    spec = tiny_spec(tokens=10 * 8 * 32)
    mixtures = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    results = train_proxies(corpus_dir, DOMAINS, mixtures, [4, 4, 4], spec, threads=1)
    assert results[0]["loss"] == results[1]["loss"] and results[0]["curve"] == results[1]["curve"]
    for r in results:
        assert set(r["loss"]) == set(r["bpb"]) == set(DOMAINS)
        assert all(math.isfinite(x) and x > 0 for x in losses(r))  # zero-weight domains are scored too
    assert results[0]["loss"]["code"] < results[2]["loss"]["code"]
    assert results[2]["loss"]["speeches"] < results[0]["loss"]["speeches"]
    corpus = Corpus.open(corpus_dir)
    per_token = corpus.bytes_per_token("val")
    for d in DOMAINS:
        assert results[0]["bpb"][d] == pytest.approx(results[0]["loss"][d] / math.log(2) / per_token[d])
    # the reported loss is the mean cross-entropy on exactly the first eval windows of each val split
    windows = eval_windows(corpus, DOMAINS, spec.eval_tokens, spec.seq_len)
    assert windows["code"].shape == (spec.eval_tokens // spec.seq_len, spec.seq_len + 1)
    untrained = train_proxies(corpus_dir, DOMAINS, mixtures[:1], [4], tiny_spec(tokens=8 * 32, lr=1e-12), threads=1)[0]
    model = GPT(load_preset(TINY, 256), seed=4)
    with torch.no_grad():
        w = torch.from_numpy(windows["legal"])
        assert untrained["loss"]["legal"] == pytest.approx(model(w[:, :-1], w[:, 1:]).item(), rel=1e-4)


def pack_run(corpus_dir, spec, mixtures, seeds):
    corpus = Corpus.open(corpus_dir)
    streams = [corpus.stream(d) for d in DOMAINS]
    samplers = [MixtureSampler(streams, DOMAINS, w, s, spec.batch_size, spec.seq_len, spec.steps)
                for w, s in zip(mixtures, seeds)]
    return PackedRun(load_preset(spec.preset, corpus.vocab_size), spec, torch.device("cpu"), samplers, seeds,
                     [1.0] * len(seeds))


def test_tail_average_is_the_mean_of_the_last_snapshots_and_ema_the_recursion(corpus_dir):
    mixtures, seeds = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]), [0, 1]
    for kind in ("tail", "ema"):
        spec = tiny_spec(tokens=20 * 8 * 32, average=kind, average_window=0.25)
        assert spec.average_steps == 5
        run = pack_run(corpus_dir, spec, mixtures, seeds)
        snapshots = []
        for step in range(spec.steps):
            run.step(step)
            snapshots.append(run.model.data.detach().clone())
        if kind == "tail":
            expected = torch.stack(snapshots[-5:]).mean(dim=0)
        else:
            expected = snapshots[0].clone()
            for snapshot in snapshots[1:]:
                expected += (snapshot - expected) / 5
        assert torch.allclose(run.average.value, expected, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(run.average.value, snapshots[-1], rtol=1e-4, atol=1e-6)   # it averages
        # the averaged weights are evaluated, and the pack's own weights are left as they were
        averaged, last = run.evaluate({"code": np.zeros((1, 33), dtype=np.int64)}), run.model.data.clone()
        assert torch.equal(run.model.data, snapshots[-1]) and torch.equal(last, snapshots[-1])
        assert averaged["code"] != run.evaluate({"code": np.zeros((1, 33), dtype=np.int64)}, averaged=False)["code"]


def test_averaging_one_step_reproduces_the_last_weights_and_packing_keeps_averages_equal(corpus_dir):
    mixtures, seeds = np.array([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5]]), [0, 1]
    plain = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, tiny_spec(), threads=1)
    one_step = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, tiny_spec(average="tail", average_window=0.01),
                             threads=1)
    for a, b in zip(plain, one_step):
        assert a["loss"] == b["loss"] and a["curve"] == b["curve"]     # exactly: the option off
    spec = tiny_spec(preset="cpu-0.5m", tokens=24 * 8 * 32, lr=1e-3, average="tail", average_window=0.5)
    packed = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, spec, threads=1, packed=True)
    naive = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, spec, threads=1, packed=False)
    last = train_proxies(corpus_dir, DOMAINS, mixtures, seeds, dataclasses.replace(spec, average="none"), threads=1)
    for a, b, c in zip(packed, naive, last):
        assert_close(losses(a), losses(b), rel=1e-4)
        assert a["curve"] == c["curve"]                                 # averaging never touches training
        assert a["loss"] != c["loss"]


def test_bad_inputs_are_rejected(corpus_dir):
    spec = tiny_spec()
    with pytest.raises(ValueError, match="mixtures"):
        train_proxies(corpus_dir, DOMAINS, np.array([[0.5, 0.5]]), [0], spec)
    with pytest.raises(ValueError, match="sum to 1"):
        train_proxies(corpus_dir, DOMAINS, np.array([[0.5, 0.6, 0.0]]), [0], spec)
    with pytest.raises(ValueError, match="seeds"):
        train_proxies(corpus_dir, DOMAINS, np.array([[0.5, 0.5, 0.0]]), [0, 1], spec)
    with pytest.raises(ValueError, match="not in the corpus"):
        train_proxies(corpus_dir, ["code", "email", "poetry"], np.array([[0.5, 0.5, 0.0]]), [0], spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pack_matches_cpu_within_bf16_noise(corpus_dir):
    spec = tiny_spec()
    mixtures = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    cpu = train_proxies(corpus_dir, DOMAINS, mixtures, [0, 1], spec)
    gpu = train_proxies(corpus_dir, DOMAINS, mixtures, [0, 1], dataclasses.replace(spec, device="cuda"))
    for a, b in zip(cpu, gpu):
        assert b["status"] == "ok" and b["device"].startswith("cuda")
        assert_close(losses(b), losses(a), rel=0.05)


# -- Ray -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_round_trip_declares_resources_and_sets_threads(corpus_dir, ray_local):
    from workers.remote import submit_pack

    spec = tiny_spec()
    mixtures = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    one = submit_pack(corpus_dir, DOMAINS, mixtures, [0, 1], spec, num_cpus=1, num_gpus=0.0, max_retries=1)
    two = submit_pack(corpus_dir, DOMAINS, mixtures[:1], [0], spec, num_cpus=2, num_gpus=0.0, max_retries=1)
    remote_one, remote_two = ray_local.get([one, two])
    assert [r["threads"] for r in remote_one] == [1, 1] and remote_two[0]["threads"] == 2
    local = train_proxies(corpus_dir, DOMAINS, mixtures, [0, 1], spec, threads=1)
    for r, ref in zip(remote_one, local):
        assert r["status"] == "ok" and r["device"] == "cpu"
        assert r["loss"] == ref["loss"] and r["curve"] == ref["curve"]   # same thread count: identical


@pytest.mark.slow
def test_worker_that_dies_is_retried(corpus_dir, ray_local, tmp_path):
    from workers.remote import submit_pack

    marker = tmp_path / "crashed-once"
    spec = tiny_spec(tokens=5 * 8 * 32, crash_once_marker=str(marker))
    mixtures = np.array([[0.5, 0.25, 0.25]])
    result = ray_local.get(submit_pack(corpus_dir, DOMAINS, mixtures, [0], spec, max_retries=1))
    assert marker.exists() and result[0]["status"] == "ok"

    marker = tmp_path / "crashed-again"
    spec = dataclasses.replace(spec, crash_once_marker=str(marker))
    with pytest.raises(ray_local.exceptions.WorkerCrashedError):
        ray_local.get(submit_pack(corpus_dir, DOMAINS, mixtures, [0], spec, max_retries=0))
    assert marker.exists()
