"""The online mixer of a large run: the mixtures it may train on, and the mixer that picks among them.

    space = run_space(settings, domains, corpus.trainable_tokens(), study=recommendation.payload)
    mixer = build_mixer(settings, domains, prior, method="static", space=space)

The run's space carries the static study's bounds and repetition caps over to this run's own
tokens, so that an online mixer never repeats a domain more often than the static search allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixopt.config import TrainSettings
from mixopt.errors import InputError


def align_weights(weights: np.ndarray, from_domains: Sequence[str], to_domains: Sequence[str]) -> np.ndarray:
    """`weights` over `from_domains` reordered to `to_domains` (a subset) and renormalised."""
    missing = [d for d in to_domains if d not in from_domains]
    if missing:
        raise InputError(f"mixture: has no weight for domains {missing}")
    index = {d: i for i, d in enumerate(from_domains)}
    w = np.array([weights[index[d]] for d in to_domains], dtype=np.float64)
    if not w.sum() > 0:
        raise InputError("mixture: zero total weight on the training domains")
    return w / w.sum()


def run_space(settings: TrainSettings, domains: Sequence[str], train_tokens: dict[str, int],
              study: dict | None = None):
    """The mixtures a run may train on (a MixtureSpace): bounds and repetition caps for this run's
    own tokens, max_epochs * train_tokens[d] / settings.model.tokens, so that an online mixer
    never repeats a domain more often than the static search allowed. train_tokens: what each
    domain's source holds for training, as the study counts it (Corpus.trainable_tokens).

    `study`: a recommendation.json payload; its config's min_weights, max_weights and max_epochs
    apply, under the train config's `online` ones (which win where both name a domain)."""
    from mixopt.space import MixtureSpace

    space = ((study or {}).get("config") or {}).get("space") or {}
    max_epochs = settings.online.max_epochs or space.get("max_epochs") or 4.0
    bounds = {}
    for name in ("min_weights", "max_weights"):
        merged = {**(space.get(name) or {}), **getattr(settings.online, name)}
        bounds[name] = {d: v for d, v in merged.items() if d in domains}
        unknown = sorted(set(getattr(settings.online, name)) - set(domains))
        if unknown:
            raise InputError(f"online.{name} names domains the run does not train on: {unknown}")
    missing = [d for d in domains if not train_tokens.get(d)]
    if missing:
        raise InputError(f"domains {missing} have no training tokens in the corpus")
    try:
        return MixtureSpace(list(domains), [train_tokens[d] for d in domains], target_tokens=settings.model.tokens,
                            max_epochs=max_epochs, **bounds)
    except InputError as exc:     # the run's tokens are model.tokens here, not a study's target_tokens
        raise InputError(f"online bounds of a {settings.model.tokens:,}-token run (max_epochs {max_epochs:g}): "
                         + str(exc).replace("target_tokens", "model.tokens")) from None


def build_mixer(settings: TrainSettings, domains: Sequence[str], prior, method: str | None = None,
                seed: int | None = None, space=None, jacobian=None):
    """The online mixer of a run: `method` (default settings.online.method) over the run's steps,
    from `prior`; with an end phase, a Schedule whose last phase holds the upweighted prior.

    `space` (run_space's MixtureSpace): the mixers stay inside its bounds and repetition caps;
    a prior outside them is brought inside (multiplicatively, as the mixers move).
    `jacobian` ((K, K) in `domains` order, `mixopt jacobian`'s): auto's option `jacobian`."""
    from mixopt import online
    from mixopt.online.base import project

    bounds = {} if space is None else {"min_weights": space.lower, "max_weights": space.upper}
    if space is not None and prior is not None:
        prior = project(np.asarray(prior, dtype=np.float64), space.lower, space.upper)
    method = method or settings.online.method
    if method not in online.METHODS:
        raise InputError(f"online must be one of {list(online.METHODS)}, got {method!r}")
    options = online.training_options(method, settings.online.options.get(method, {}))
    if jacobian is not None:
        if method != "auto":
            raise InputError(f"jacobian: only the auto mixer uses a Jacobian, not {method}")
        options["jacobian"] = jacobian
    seed = settings.seed if seed is None else seed
    steps = settings.steps
    if method in ("static", "stratified") and "round_steps" not in options:
        options["round_steps"] = max(1, steps // 20)          # evaluate (and log) 20 times
    end = settings.online.end_phase
    if end is None:
        return online.create(method, domains=list(domains), steps=steps, prior=prior, seed=seed, **options, **bounds)
    base = np.full(len(domains), 1.0 / len(domains)) if prior is None else np.asarray(prior, dtype=np.float64)
    final = online.upweight(base, end.upweight, list(domains))
    if space is not None:
        final = project(final, space.lower, space.upper)
    phases = [online.Phase(until=1.0 - end.fraction, method=method, prior=prior, options=options),
              online.Phase(until=1.0, method="static", prior=final)]
    return online.Schedule(list(domains), steps, phases, seed=seed, **bounds)


def phase_name(mixer) -> str:
    """'<phase index>:<method>' of the round a local mixer is in (a Schedule's current phase)."""
    from mixopt.online import Schedule

    if isinstance(mixer, Schedule):
        if mixer.mixer is None:
            return f"{len(mixer.phases) - 1}:{mixer.phases[-1].method}"
        return f"{mixer.index}:{mixer.phases[mixer.index].method}"
    return f"0:{getattr(mixer, 'method', 'remote')}"


def probing(mixer) -> bool:
    """Whether the round is one of the mixer's probes (aioli's LearnParams sweeps)."""
    inner = getattr(mixer, "mixer", mixer)
    return bool(getattr(inner, "probing", False))
