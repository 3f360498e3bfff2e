"""Online data mixing during the large run: ask for proportions, train, tell the losses.

The protocol (one "round" is one ask/tell):

    mixer = mixopt.online.create("auto", domains=names, steps=T, prior=p_static, seed=0)
    step = 0
    while not mixer.done:                  # equivalently: while step < T
        p = mixer.ask()                    # (K,) proportions: on the simplex, finite, inside bounds
        n = mixer.next_steps               # train exactly n steps on p (n may be 0: evaluate only)
        train(model, p, n)
        mixer.tell(eval_losses(model))     # (K,) per-domain eval losses measured after those n steps
        step += n
        mixer.save(checkpoint_dir / "mixer.json")   # resumable, atomically written JSON

* `ask()` returns the same proportions until `tell()`; the proportions hold for `next_steps`
  training steps (the trainer samples its batches from them). The segments of a run add up to
  exactly `steps`; the mixer is `done` when they have all been told.
* `tell(losses)`: NaN marks a domain that was not evaluated this round; anything else must be
  finite (InputError, naming `losses`). Losses are eval losses of the model being trained, at the
  end of the segment. A 0-step segment (aioli and auto ask for one at step 0) is an evaluation
  of the untrained starting point.
* A trainer that evaluates on its own fixed interval instead of after `next_steps` says how many
  steps it trained on the asked proportions: `tell(losses, steps=n)` (0 <= n <= `remaining`; in a
  Schedule, within the current phase). The mixers use the steps told. aioli's probes (and the
  evaluation before them) must be trained as asked (InputError otherwise).
* Probing methods (aioli) control what is trained during their probes: during a LearnParams sweep
  `ask()` returns a one-hot-ish probe mixture and `next_steps` its `lp_steps`; `mixer.probing`
  tells which. Probe steps are real training steps of the main model with its optimizer and
  learning-rate schedule, and they count against `steps`: Aioli's released code keeps them (no
  rollback: learn_params_subroutine trains self.model with self.optimizer and then
  counter += lp_duration), so nothing has to be snapshotted or restored.
* `state_dict()` is JSON-ready (configuration, counters, random stream, learned state);
  `mixer.save(path)` writes it atomically; `mixopt.online.load(path_or_state)` rebuilds the mixer,
  and a resumed mixer continues exactly as an uninterrupted one would (also between ask and tell).
* `create(method, domains, steps, prior=None, seed=0, **options)`: `domains` is a list of names
  (or a count), `steps` the training steps of the run (or of the phase, inside a Schedule),
  `prior` the starting mixture (for `static` the mixture held; None: uniform). Options of every
  method: `min_weights`, `max_weights` (per-domain bounds: a scalar or K values) and `objective`
  (K non-negative weights of the per-domain losses in the objective; equal when omitted). Method
  options are documented on each class; unknown options raise InputError.

Methods (METHODS):
* `stratified`: uniform. `static`: holds the prior.
* `aioli`: Aioli (Chen et al. 2024) as in its released code -- see mixopt/online/aioli.py.
* `doremi`: DoReMi's exponentiated-gradient reweighting on excess loss over a reference model's
  losses (option `reference_losses`), online on the main model.
* `auto`: ours -- greedy exponentiated gradient on marginal gains read from every evaluation
  (each domain's own loss curve, corrected for transfer by short antithetic tilts), no probe
  steps, starting at the prior and staying there until the first tilt pair is in
  (mixopt/online/auto/: the model and the control law). Its options and their presets are one
  frozen AutoSettings (mixopt.online.auto.settings). Option `jacobian` (K, K): the proxies'
  per-domain Jacobian d L_j / d p_i at the prior, the transfer structure that one run's tilts
  cannot estimate with many domains (mixopt.online.jacobian.estimate_jacobian from a study's
  proxies, `mixopt jacobian` for a finished study; simulate.proxy_jacobian exactly).

Real training runs (`mixopt train`, pipeline.online_mixer) take `training_options(method,
options)`: the method's training preset under the caller's options (auto: AutoSettings' TRAINING,
gentle tilts and the narrow control). The defaults of `create` are chosen on the simulators, whose
losses depend on cumulative exposure only, so that short tilts of the mixture there cost nothing;
in real training they do, and moving further from the recommendation does not pay
(docs/decisions/0007-auto-in-real-training.md).

Schedules (mixopt/online/schedule.py): `Schedule(domains, steps, phases=[Phase(until=0.85,
method="auto", prior=p), Phase(until=1.0, method="static", prior=upweight(p, {...}, domains))])`
has the same protocol; each phase's mixer adapts within its phase.

Simulators for all of this live in mixopt/online/simulate.py (imported on demand: it needs scipy).
"""

from __future__ import annotations

from collections.abc import Mapping

from mixopt.online.aioli import AioliMixer
from mixopt.online.auto import TRAINING as AUTO_TRAINING
from mixopt.online.auto import AutoMixer
from mixopt.online.base import OnlineMixer, read_state
from mixopt.online.baselines import StaticMixer, StratifiedMixer
from mixopt.online.doremi import DoReMiMixer
from mixopt.online.jacobian import estimate_jacobian
from mixopt.online.registry import METHODS, create, load_mixer
from mixopt.online.schedule import Phase, Schedule, upweight


def training_options(method: str, options: Mapping | None = None) -> dict:
    """The options of `method` for a real training run: its training preset under `options`
    (auto: AutoSettings' TRAINING, every option; the other methods: their defaults)."""
    preset = AUTO_TRAINING.as_options() if method == AutoMixer.method else {}
    return {**preset, **(options or {})}


__all__ = ["create", "load", "training_options", "estimate_jacobian", "METHODS", "OnlineMixer", "Schedule",
           "Phase", "upweight", "AioliMixer", "AutoMixer", "DoReMiMixer", "StaticMixer", "StratifiedMixer"]


def load(source) -> OnlineMixer | Schedule:
    """A mixer (or Schedule) from `state_dict()` output or from the JSON file `save()` wrote."""
    state = read_state(source)
    if state.get("method") == Schedule.method:
        return Schedule.from_state(state)
    return load_mixer(state)
