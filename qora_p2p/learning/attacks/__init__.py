"""Byzantine behaviours from the robust-learning literature.

Theory of operation
-------------------
Attackers collude and are omniscient, as in the papers: each round they see every honest update
before sending theirs (a `RoundView`), and the adaptive ones know the aggregation rule as the
protocol runs it (`qora_p2p.protocol.state.compute_round`): the genesis rule's fixed-point
parameters, the previous round's aggregate as the centre when the genesis centres on it, and the
reputation weights of every input when the rule is weighted (`rule_in_force`). An attack acts at
one of two points:

* **data poisoning** changes the attacker's training data before it trains (label flipping,
  backdoor); its update is then computed honestly from the poisoned data;
* **model poisoning** replaces the update with a forged vector (everything else).

The interface
-------------
An attack is an `Attack` object. ``forge(view)`` returns the (b, P) updates the b attackers send
(one per row of ``view.own``); with ``poisons_data = True``, ``poison_data(features, labels,
classes, rng)`` returns the training data an attacker uses instead of its shard; with
``reads_honest = True`` (the ``wants_view`` property), a test-network node waits a bounded time
for other members' updates before it forges. The `RoundView` is everything the coalition knows:
the honest rows and their own, the members behind each row, the round number, the rule in force
with its parameters and per-row reputation weights, the previous aggregate, every member's
reputation and a shared random stream; ``view.aggregate(forged)`` runs the rule exactly as the
protocol will. The federation and a test network's forging node build the view in one place
(`round_view`).

An object can be the ``attack`` of a `FederationConfig` or of a node's `WorkloadConfig`;
`register_attack` gives a class a name that configurations, node profiles and `build_attack`
accept, with options checked against the dataclass fields' types (ints, bools and strings stay
what they are)::

    @dataclass(frozen=True)
    class Nudge(Attack):
        strength: float = 1.0

        def forge(self, view: RoundView) -> Updates:  # push against last round's direction
            previous = np.zeros(view.own.shape[1]) if view.previous is None else view.previous
            return view.own - self.strength * previous

    register_attack("nudge", Nudge)
    run_federation(FederationConfig(byzantine=3, attack="nudge", attack_params={"strength": 2}))
    run_federation(FederationConfig(byzantine=3, attack=Nudge(strength=2.0)))

Definitions (updates are model deltas, i.e. minus a learning rate times a gradient; ``mu`` and
``sigma`` are the coordinate-wise mean and standard deviation of the round's honest updates, ``n``
the number of members and ``b`` the number of attackers; defaults in parentheses):

==================  ==============================================================  ====================
attack              update sent                                                     source
==================  ==============================================================  ====================
sign_flip           ``-scale * own``                                   (scale 1)    Allouah et al. 2023
norm_sign_flip      ``-own`` rescaled to the honest updates' median norm            this project
scaling             ``factor * own``                                  (factor 10)   Bagdasaryan et al.
                                                                                    2020
gaussian            ``N(0, std**2)`` per coordinate                (std sqrt(200))  Blanchard et al. 2017
zero                ``0`` (free riding)                                             ByzFL; Fraboni et
                                                                                    al. 2021
stale               the previous round's aggregate (free riding)                    Lin et al. 2019
copy                a random honest update, per attacker (free riding)              this project
random              ``U(-scale, scale)`` per coordinate                (scale 10)   ByzFL
label_flip          train on labels ``classes - 1 - y``                             Allouah et al. 2023
backdoor            train with a trigger on ``fraction`` of samples, relabelled     Gu et al. 2017;
                    ``target``; update times ``boost``  (target 0, fraction 0.5,    Bagdasaryan et al.
                    boost 1)                                                        2020
alie                ``mu + z * sigma``; z from ``s = floor(n/2 + 1) - b``,          Baruch et al. 2019
                    ``z = Phi^-1((n - s) / n)``, or a fixed ``z``
ipm                 ``-epsilon * mu``                                (epsilon 0.1)  Xie et al. 2019
mimic               a copy of the honest update farthest along the honest           Karimireddy et al.
                    updates' top principal direction                                2022
adaptive_alie       ALIE with the ``z`` from a grid that moves the rule's           Shejwalkar and
                    aggregate farthest from ``mu`` (the attack runs the rule)       Houmansadr 2021
adaptive_ipm        IPM with ``epsilon`` chosen the same way                        (same)
optimal_alie        ALIE with the ``z`` that ByzFL's line maximisation              ByzFL (Allouah et
                    (`line_maximise`: expansion, then contraction) finds for the    al. 2023)
                    same objective  (evaluations 20, start 0, step 10, ratio 0.8)
optimal_ipm         IPM with ``epsilon`` found the same way                         (same)
min_max             ``mu + gamma * p``, ``p`` = ``-mu/||mu||`` (perturbation        Shejwalkar and
                    ``unit``), ``sigma`` (``std``) or ``-sign(mu)`` (``sign``);     Houmansadr 2021
                    the largest gamma (the paper's binary search from
                    ``gamma_init`` 10 to ``tolerance`` 1e-5) whose farthest honest
                    update is within the largest honest pairwise distance
min_sum             the same, with the forgery's sum of squared distances to the    (same)
                    honest updates within the largest honest one's
fang                per coordinate, against the sign of ``mu``: uniform just past   Fang et al. 2020
                    the honest min (``mu >= 0``) or max, by at most a factor
                    ``spread`` (2); the full-knowledge attack on trimmed mean and
                    median, on updates
fang_krum           ``mu - lam * sign(mu)`` from one attacker, the same within      Fang et al. 2020
                    ``epsilon`` (1e-4) from the others; ``lam`` halved from the
                    paper's upper bound until Krum picks the crafted update (down
                    to ``threshold`` 1e-4); the full-knowledge attack on Krum
reputation_farming  its own honest update for ``rounds`` rounds (10), then the      DESIGN.md threat
                    ``inner`` attack (``alie``) with ``inner_params``               checklist
==================  ==============================================================  ====================

ALIE's ``mu + z sigma`` on deltas is the paper's ``mu - z sigma`` on gradients, and min-max's
``std`` perturbation ``+sigma`` is the paper's ``-sigma`` (the other perturbations keep their
sign). Sources: Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021; Fang, Cao, Jia and Gong,
"Local Model Poisoning Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020;
Lin, Du and Liu, "Free-riders in Federated Learning: Attacks and Defenses", 2019; Fraboni,
Vidal and Lorenzi, "Free-rider Attacks on Model Aggregation in Federated Learning", AISTATS
2021; ByzFL (EPFL), ``Optimal_ALittleIsEnough`` and ``Optimal_InnerProductManipulation``.
"""

from qora_p2p.learning.attacks.base import (
    ATTACKS,
    Attack,
    RoundView,
    Updates,
    build_attack,
    register_attack,
    resolve_attack,
    round_view,
    rule_in_force,
)
from qora_p2p.learning.attacks.classic import (
    ALIE,
    IPM,
    AdaptiveALIE,
    AdaptiveIPM,
    Backdoor,
    Copy,
    Gaussian,
    LabelFlip,
    Mimic,
    NormSignFlip,
    Random,
    Scaling,
    SignFlip,
    Stale,
    Zero,
    alie_z,
)
from qora_p2p.learning.attacks.farming import ReputationFarming
from qora_p2p.learning.attacks.optimised import Fang, FangKrum, MinMax, MinSum, OptimalALIE, OptimalIPM, line_maximise

__all__ = [
    "ALIE",
    "ATTACKS",
    "IPM",
    "AdaptiveALIE",
    "AdaptiveIPM",
    "Attack",
    "Backdoor",
    "Copy",
    "Fang",
    "FangKrum",
    "Gaussian",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "NormSignFlip",
    "OptimalALIE",
    "OptimalIPM",
    "Random",
    "ReputationFarming",
    "RoundView",
    "Scaling",
    "SignFlip",
    "Stale",
    "Updates",
    "Zero",
    "alie_z",
    "build_attack",
    "line_maximise",
    "register_attack",
    "resolve_attack",
    "round_view",
    "rule_in_force",
]

BUILT_IN = (
    Attack,
    SignFlip,
    NormSignFlip,
    Scaling,
    Gaussian,
    Zero,
    Stale,
    Copy,
    Random,
    LabelFlip,
    Backdoor,
    ALIE,
    IPM,
    Mimic,
    AdaptiveALIE,
    AdaptiveIPM,
    OptimalALIE,
    OptimalIPM,
    MinMax,
    MinSum,
    Fang,
    FangKrum,
    ReputationFarming,
)
for _kind in BUILT_IN:
    register_attack(_kind.name, _kind)
