"""The site's side of secure aggregation: the keys, shares and masks of SecAgg+ (``worker.engine.privacy.secagg``).

The server relays every message but holds no key: what it receives from this site in the masking step is uniformly
random without the other sites' help. Each session's client (fresh X25519 keys, a fresh self-mask seed) lives only
in this process's memory, from its keys to its unmask step; an agent restarted mid-round drops out of that round
and is recovered by its neighbours' shares.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from app.sites.protocol import SecAggAnswer, SecAggTask, SiteTask
from worker.engine.privacy.masking import SecAggParams
from worker.engine.privacy.secagg import PublicKeys, SecAggClient
from worker.engine.protection import moments_params
from worker.site.datasets import TaskRefused

#: sessions kept at once: a round's updates and its statistics, for a couple of runs
MAX_SESSIONS = 8


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _peers(given: Mapping[str, str] | None, what: str) -> dict[str, bytes]:
    if given is None:
        raise TaskRefused(f"the secure-aggregation step lacks its {what}")
    return {peer: decode(value) for peer, value in given.items()}


def task_params(secagg: SecAggTask) -> SecAggParams:
    """The sum's settings; the statistics pass sums moments over their own, wider range."""
    params = SecAggParams(secagg.threshold, secagg.clip_range, secagg.weight_cap)
    return moments_params(params) if secagg.session == "statistics" else params


class MaskingSessions:
    """One ``SecAggClient`` per (run, round, session), created by the advertise step and used by the next three."""

    def __init__(self) -> None:
        self._clients: OrderedDict[tuple[str, int, str], SecAggClient] = OrderedDict()

    def _secagg(self, task: SiteTask) -> SecAggTask:
        if task.settings.secagg is None:
            raise TaskRefused(f"a {task.kind} step without secure-aggregation settings")
        return task.settings.secagg

    def _client(self, task: SiteTask) -> SecAggClient:
        key = (str(task.run_id), task.round, self._secagg(task).session)
        if key not in self._clients:
            raise TaskRefused("no keys for this round: the agent restarted after it advertised them")
        return self._clients[key]

    def step(self, task: SiteTask) -> SecAggAnswer:
        """Answer an advertise, share or unmask step."""
        secagg = self._secagg(task)
        if task.kind == "advertise":
            client = SecAggClient(task.client_id, task.round, task_params(secagg))
            self._clients[(str(task.run_id), task.round, secagg.session)] = client
            while len(self._clients) > MAX_SESSIONS:
                self._clients.popitem(last=False)
            return SecAggAnswer(public_keys=encode(client.advertise().to_bytes()))
        client = self._client(task)
        if task.kind == "share":
            roster = {site: PublicKeys.from_bytes(keys) for site, keys in _peers(secagg.roster, "roster").items()}
            return SecAggAnswer(outbox={peer: encode(sealed) for peer, sealed in client.share(roster).items()})
        if task.kind == "unmask":
            reveal = client.unmask(secagg.survivors or [], secagg.dropped or [])
            return SecAggAnswer(
                seed_shares={site: encode(share) for site, share in reveal.seed_shares.items()},
                key_shares={site: encode(share) for site, share in reveal.key_shares.items()},
            )
        raise TaskRefused(f"{task.kind} is not a secure-aggregation step")

    def mask(self, task: SiteTask, vector: np.ndarray, weight: int) -> np.ndarray:
        """The masked uint32 encoding of (vector, weight), with the shares this site received."""
        return self._client(task).mask(vector, weight, _peers(self._secagg(task).inbox, "inbox"))
