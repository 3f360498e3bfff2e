"""`auto`: greedy exponentiated gradient on marginal gains read from every evaluation of the run.

Aioli re-estimates an interaction matrix every round from probe sweeps that cost training steps.
`auto` spends no steps on probes: each domain's own loss curve gives a first estimate of what one
more step of that domain is worth, and short antithetic tilts of the mixture (which net out)
correct it for transfer between domains.

    settings.py   AutoSettings: every option with its default, unit and meaning; the presets
    estimate.py   what the mixer believes: rates, noise, tilt pairs, the ridge fits, the gains
    control.py    how it moves: the step, the leak, the tilt cap, the guard
    mixer.py      AutoMixer: the ask/tell protocol and the saved state

Model. p is the mixture, w the objective's weights, r_j the rate at which domain j's loss falls
now (per step) and R = sum_j w_j r_j the objective's. The gain of one more step of domain i is

    G_i = k * sum_j a[i, j] w_j (r_j + R eps_j) + R delta_i

* a[i, j]: what one step of domain i does to domain j's loss, in units of j's rate. Without a
  Jacobian every domain learns only from its own data: a = diag(1 / p), and G_i = k w_i (r_i +
  R eps_i) / p_i (its loss falls at r_i while it gets a share p_i of the steps). With `jacobian`
  (J[i, j] = dL_j / dp_i of the proxies' final losses at the prior): a[:, j] = J[:, j] /
  (p . J[:, j]), the proxies' transfer structure renormalised to the current mixture
  (estimate.response), mixed with diag(1 / p) by `jacobian_weight`.
* eps_j (prior 0, sd `own_rate_scale`): a correction to the part of domain j's rate that its own
  data buys (a loss that rises because other domains hurt it must not read as "its own data hurts
  it"). k (prior 1, sd `own_scale`): one own-data share for all domains. delta_i (prior 0, sd
  `transfer_scale`): a per-domain transfer correction. eps and delta are in units of R, so that
  they stay put while the rates fall.

Estimation (estimate.GainEstimator).
* Rates, short memory: each domain's losses at the last `window` clean evaluations (no exposure
  deviation outstanding) are fitted by a quadratic in log step; r_j is minus its slope now. A
  local fit follows the curve when the mixture moves, where a global trend model would lag.
* Tilt pairs, long memory: the mixture is tilted to q = p exp(+perturb s) for one round and to
  p exp(-perturb s) for the next (s: a random balanced +-1 pattern), so the exposure deviation
  D = (q - p) n is outstanding at the pair's middle evaluation and gone at both ends. At the
  middle, each domain's loss minus its interpolation from the clean evaluations around it (cubic
  in log step through two on each side), y_j, measures

      y_j ~ -(a^T D)_j (r_j + R eps_j)       one observation of eps_j per pair and domain
      w . y ~ -G . D                          one observation of (k, delta) per pair

  Both are ridge regressions over all pairs of the run, each observation weighted by its
  variance: per domain, the leave-one-out interpolation errors of the clean evaluations; for the
  objective, the per-domain errors added as if fully correlated (eval noise shared by all domains
  does not average out).
* Loss spikes (`outlier` = c, 0: off): each clean evaluation is checked against the cubic through
  two on each side; if the objective jumps by more than c noise sds it is dropped, and no error
  raises the noise estimates by more than c^2 times. Pairs wait until their neighbours are
  checked and enter the regressions with Huber weights: a residual more than c predictive sds
  (noise and the estimate's own uncertainty) from the current estimate counts c / z times.

Control (control.py), after every clean evaluation once the first pair is in (until then nothing
says that the mixture matters, and the mixture stays at the prior). theta = log p:

    rho    = clip((G - p . G) / sum_j w_j |r_j| + rho_s / (1 + pairs / 3), +-RHO_MAX)
    theta <- clip(theta + clip(eta rho, +-max_step) - leak (theta - theta_prior), theta_prior +- max_tilt)
    p     <- project(exp theta) onto the bounds, then the guard

* eta rho, the integral action: it moves shares towards the domains whose marginal gain is above
  the mixture's and drives the marginal gains to equality -- the greedy allocation, which for
  losses that depend on cumulative exposure ends at the best constant mixture and makes up for
  rounds spent elsewhere. max_step bounds one round's move; RHO_MAX cuts relative gains that can
  only be estimation noise.
* leak: pulls theta back towards the prior, so that noise cannot walk the mixture away from it.
* max_tilt: the mixture stays within a factor exp(max_tilt) of the prior either way.
* The guard (`guard` = g noise sds, 0: off): a domain at or below its prior share whose newest
  clean loss is more than g noise sds above its lowest keeps at least its current share (the
  others make room). A loss that climbs while its domain trains reads, in the own-data model, as
  "its own data hurts it"; where other domains' data hurts it instead, cutting it lets them push
  its loss up faster still, to its ceiling. Repetition, the case where its own data does hurt, is
  what max_weights bounds.
* rho_s (`sensitivity`, the static surrogate's gradient at the prior): a prior tilt down that
  gradient, largest entry 0.5, fading over the first pairs.
* Pairs net out, so where losses depend on cumulative exposure exploring costs nothing to first
  order; in real training it does (hence the TRAINING preset's gentle tilts). No pair starts
  before two clean evaluations exist or in the last `taper` share of the run.

What was measured to choose all this: docs/decisions/0004-auto-gain-estimate.md (the estimate),
0005-auto-control-and-guard.md (the control and the guard, the SIMULATOR preset),
0006-auto-jacobian.md (the Jacobian, WITH_JACOBIAN), 0007-auto-in-real-training.md (TRAINING);
current figures: docs/benchmarks.md (benchmarks/online_sim.py, benchmarks/online_real.py).
"""

from mixopt.online.auto.estimate import Evaluation, GainEstimator, PairMiddle
from mixopt.online.auto.mixer import AutoMixer
from mixopt.online.auto.settings import PRESETS, SIMULATOR, TRAINING, WITH_JACOBIAN, AutoSettings, preset_for

__all__ = ["AutoMixer", "AutoSettings", "PRESETS", "SIMULATOR", "WITH_JACOBIAN", "TRAINING", "preset_for",
           "GainEstimator", "Evaluation", "PairMiddle"]
