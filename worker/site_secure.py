"""Secure aggregation over hospital sites: the server's side of SecAgg+ as four rounds of site tasks.

advertise (each site's fresh public keys) -> share (sealed Shamir shares, relayed) -> train or statistics (each site
uploads only its masked vector) -> unmask (survivors reveal the shares that remove the masks). The server learns
the sum and nothing else; a site that drops after masking is recovered, and with fewer survivors than the
threshold the round fails with nothing unmasked (Bonawitz et al., CCS 2017; Bell et al., CCS 2020).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app.run_config import RunConfig
from app.sites.protocol import SecAggAnswer, SecAggTask, TaskResult
from worker.engine.privacy.masking import SecAggParams
from worker.engine.privacy.secagg import PublicKeys, Reveal, SecAggServer, TooFewSurvivors
from worker.engine.protection import apply_mean_change, moments_from_means, moments_params
from worker.engine.strategy import Aggregate
from worker.engine.types import ClientFailure, ClientStatus, ClientUpdate, Weights
from worker.site.masking import decode, encode
from worker.site_executor import SiteExecutor, TooFewSites

logger = logging.getLogger(__name__)


class SecureSites:
    """A round's training and BatchNorm statistics through SecAgg+ over the run's sites (``loop.SecureAggregator``).

    The updates it returns carry each site's metrics and sample count, and as weights only the masked vector the
    server received.
    """

    def __init__(self, sites: SiteExecutor, cfg: RunConfig, batchnorm_slots: Sequence[int]) -> None:
        secure = cfg.privacy.secure_aggregation
        if secure is None:
            raise ValueError("the run does not ask for secure aggregation")
        self.sites, self.cfg, self.slots = sites, cfg, list(batchnorm_slots)
        self.params = SecAggParams(secure.threshold, secure.clip_range, secure.weight_cap)

    def _task(self, session: str, **step: object) -> SecAggTask:
        secure = self.cfg.privacy.secure_aggregation
        assert secure is not None  # checked in __init__
        return SecAggTask.model_validate(
            {"session": session, "threshold": secure.threshold, "clip_range": secure.clip_range}
            | {"weight_cap": secure.weight_cap}
            | step
        )

    def _answers(
        self, kind: str, rnd: int, weights: Weights, steps: dict[str, SecAggTask]
    ) -> tuple[dict[str, SecAggAnswer], list[ClientFailure]]:
        answers, failures = {}, []
        for cid, answer in self.sites.round_trip(kind, rnd, weights, list(steps), steps).items():
            if isinstance(answer, ClientFailure):
                failures.append(answer)
            elif answer.secagg is None:
                failures.append(ClientFailure(cid, f"the site answered the {kind} step without its keys or shares"))
            else:
                answers[cid] = answer.secagg
        return answers, failures

    def _masked(self, cid: str, answer: TaskResult) -> np.ndarray | ClientFailure:
        received = self.sites.received(cid, answer, "masked update")
        return received if isinstance(received, ClientFailure) else received[0]

    def _secure_sum(
        self, session: str, rnd: int, weights: Weights, client_ids: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, ClientUpdate], list[ClientFailure]]:
        """The decoded mean of the sites' vectors of ``session`` (train: changes; statistics: moments), and per site
        what the server received: its masked vector, sample count and metrics."""
        params = moments_params(self.params) if session == "statistics" else self.params
        server = SecAggServer(rnd, params)
        keys, failures = self._answers("advertise", rnd, weights, {c: self._task(session) for c in client_ids})
        roster = server.roster({cid: PublicKeys.from_bytes(decode(a.public_keys or "")) for cid, a in keys.items()})
        public = {cid: encode(k.to_bytes()) for cid, k in roster.items()}
        shared, lost = self._answers("share", rnd, weights, {c: self._task(session, roster=public) for c in roster})
        failures += lost
        inboxes = server.route(
            {cid: {peer: decode(v) for peer, v in (a.outbox or {}).items()} for cid, a in shared.items()}
        )
        steps = {
            cid: self._task(session, inbox={peer: encode(v) for peer, v in inbox.items()}, sites=len(inboxes))
            for cid, inbox in inboxes.items()
        }
        masked: dict[str, np.ndarray] = {}
        received: dict[str, ClientUpdate] = {}
        for cid, answer in self.sites.round_trip(session, rnd, weights, list(steps), steps).items():
            vector = answer if isinstance(answer, ClientFailure) else self._masked(cid, answer)
            if isinstance(vector, ClientFailure):
                failures.append(vector)
            elif isinstance(answer, TaskResult):
                masked[cid] = vector
                received[cid] = ClientUpdate(cid, [vector], answer.num_examples, answer.metrics)
        try:
            request = server.unmask_request(masked)  # refused before any share is asked for
        except TooFewSurvivors:
            raise TooFewSites(
                f"round {rnd}: {len(masked)} sites' masked {session} arrived, fewer than the secure-aggregation "
                f"threshold {params.threshold}; the round failed and nothing was unmasked (resume once enough sites "
                "are online)"
            ) from None
        step = {"survivors": list(request.survivors), "dropped": list(request.dropped)}
        revealed, lost = self._answers(
            "unmask", rnd, weights, {c: self._task(session, **step) for c in request.survivors}
        )
        failures += lost
        reveals = {
            cid: Reveal(
                {site: decode(v) for site, v in (a.seed_shares or {}).items()},
                {site: decode(v) for site, v in (a.key_shares or {}).items()},
            )
            for cid, a in revealed.items()
        }
        mean, _total = server.aggregate(masked, reveals)
        return mean, received, failures

    def train(
        self, rnd: int, weights: Weights, client_ids: Sequence[str]
    ) -> tuple[Aggregate | None, list[ClientUpdate], list[ClientFailure]]:
        mean, received, failures = self._secure_sum("train", rnd, weights, client_ids)
        if len(received) < self.cfg.federation.min_sites:
            raise TooFewSites(
                f"round {rnd}: {len(received)} of {len(client_ids)} sites sent a masked update; federation.min_sites "
                f"is {self.cfg.federation.min_sites}"
            )
        aggregate = Aggregate(apply_mean_change(weights, mean), dict.fromkeys(received, ClientStatus.TRAINED))
        return aggregate, list(received.values()), failures

    def statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> tuple[Weights, list[ClientUpdate]]:
        """The pooled BatchNorm moments under ``weights``, summed securely (see ``protection.moments_vector``)."""
        mean, received, _failures = self._secure_sum("statistics", rnd, weights, client_ids)
        like = [w for slot in self.slots for w in (weights[slot], weights[slot + 1])]
        return moments_from_means(mean, like), list(received.values())
