"""Secure aggregation (Bonawitz et al., 2017; SecAgg+, Bell et al., 2020): masks, shared secrets, dropout recovery."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.engine.privacy.masking import SEED_BYTES, SecAggParams, decode, encode, prg
from worker.engine.privacy.shamir import SHARE_BYTES, Share, combine, split

_KEY_BYTES = 32
_NONCE_BYTES = 12


class TooFewSurvivors(Exception):
    """Fewer than ``threshold`` sites (or shares of one secret) survive: the round fails and nothing is unmasked."""

    def __init__(self, round: int, survivors: int, threshold: int) -> None:
        super().__init__(f"round {round}: {survivors} surviving share holders, below the threshold {threshold}")
        self.round, self.survivors, self.threshold = round, survivors, threshold


class UnsafeReveal(ValueError):
    """A request that would let the server unmask one site: both its self-mask seed and its mask key."""


@dataclass(frozen=True)
class PublicKeys:
    """A site's raw X25519 public keys of one round: for mask agreement and for encrypting shares."""

    mask_key: bytes
    share_key: bytes

    def to_bytes(self) -> bytes:
        return self.mask_key + self.share_key

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeys:
        if len(data) != 2 * _KEY_BYTES:
            raise ValueError(f"public keys are {2 * _KEY_BYTES} bytes, got {len(data)}")
        return cls(data[:_KEY_BYTES], data[_KEY_BYTES:])


@dataclass(frozen=True)
class UnmaskRequest:
    """Sites whose masked update arrived, and sites that shared but dropped, whose pairwise masks must go."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class Reveal:
    """One survivor's answer: encoded shares of survivors' self-mask seeds and of dropped sites' mask keys."""

    seed_shares: dict[str, bytes]
    key_shares: dict[str, bytes]


def neighbour_graph(sites: Collection[str], round: int, degree: int) -> dict[str, frozenset[str]]:
    """Each site's neighbours: a ``degree``-regular Harary ring (even degree, or n - 1 for the complete graph).

    The ring order is a hash of the round and the ids, so the server and every site compute the same graph with no
    message, and it changes every round.
    """
    order = sorted(sites, key=lambda s: (hashlib.sha256(_info("ring", round, s)).digest(), s))
    if degree >= len(order) - 1:
        return {s: frozenset(order) - {s} for s in order}
    n = len(order)
    return {
        s: frozenset(order[(i + step) % n] for k in range(1, degree // 2 + 1) for step in (k, -k))
        for i, s in enumerate(order)
    }


class SecAggClient:
    """One site in one round; holds its private keys and secrets in memory, so one object serves one round of a
    long-lived site process. Call advertise, share, mask and unmask in that order."""

    def __init__(self, client_id: str, round: int, params: SecAggParams) -> None:
        self.client_id, self.round, self.params = client_id, round, params
        self._mask_key, self._share_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self._seed = os.urandom(SEED_BYTES)  # b_u: fresh per round, like both keys
        self._roster: dict[str, PublicKeys] = {}
        self._neighbours: frozenset[str] = frozenset()
        self._held: dict[str, tuple[Share, Share]] = {}  # owner -> (share of its seed, share of its mask key)
        self._masked = False
        self._revealed_seeds: set[str] = set()
        self._revealed_keys: set[str] = set()

    def advertise(self) -> PublicKeys:
        return PublicKeys(
            self._mask_key.public_key().public_bytes_raw(), self._share_key.public_key().public_bytes_raw()
        )

    def share(self, roster: Mapping[str, PublicKeys]) -> dict[str, bytes]:
        """Ciphertext per neighbour of its shares of this site's seed and mask key; keeps its own pair of shares."""
        if self._roster:
            raise RuntimeError("share() runs once per round: a second split would hand out more shares")
        if roster.get(self.client_id) != self.advertise():
            raise ValueError(f"the roster does not hold {self.client_id!r} with the keys it advertised")
        self.params.check(len(roster))
        self._roster = dict(roster)
        self._neighbours = neighbour_graph(roster, self.round, self.params.degree(len(roster)))[self.client_id]
        holders = sorted(self._neighbours | {self.client_id})
        seeds = split(self._seed, self.params.threshold, len(holders))
        keys = split(self._mask_key.private_bytes_raw(), self.params.threshold, len(holders))
        outbox = {}
        for holder, seed_share, key_share in zip(holders, seeds, keys, strict=True):
            if holder == self.client_id:
                self._held[holder] = (seed_share, key_share)
            else:
                outbox[holder] = self._seal(holder, seed_share.to_bytes() + key_share.to_bytes())
        return outbox

    def mask(self, vector: np.ndarray, weight: int, inbox: Mapping[str, bytes]) -> np.ndarray:
        """The encoding of (``vector``, ``weight``) plus the self mask and one pairwise mask per neighbour that
        shared (``inbox``: its ciphertext for this site). Raises cryptography's InvalidTag on a tampered
        ciphertext and TooFewSurvivors when too few neighbours shared to ever recover this site's masks."""
        if not self._roster or self._masked:
            raise RuntimeError("mask() runs once, after share(): two vectors under one mask reveal their difference")
        if not set(inbox) <= self._neighbours:
            raise ValueError(f"shares from non-neighbours {sorted(set(inbox) - self._neighbours)}")
        if len(inbox) + 1 < self.params.threshold:
            raise TooFewSurvivors(self.round, len(inbox) + 1, self.params.threshold)
        plain = {sender: self._open(sender, ciphertext) for sender, ciphertext in inbox.items()}
        words = encode(vector, weight, self.params, len(self._roster))
        self._held |= {
            s: (Share.from_bytes(p[:SHARE_BYTES]), Share.from_bytes(p[SHARE_BYTES:])) for s, p in plain.items()
        }
        self._masked = True
        np.add(words, prg(self._seed, len(words)), out=words)
        for peer in sorted(inbox):
            stream = prg(
                pair_seed(self._mask_key, self._roster[peer].mask_key, self.round, self.client_id, peer), len(words)
            )
            (np.add if self.client_id < peer else np.subtract)(words, stream, out=words)
        return words

    def unmask(self, survivors: Sequence[str], dropped: Sequence[str]) -> Reveal:
        """The shares this site holds of survivors' seeds and of dropped sites' mask keys.

        Raises UnsafeReveal, the protocol's safety rule, for a site named both survivor and dropped, now or across
        calls, or when this site is not named a survivor; TooFewSurvivors below the threshold.
        """
        alive, gone = set(survivors), set(dropped)
        if not self._masked:
            raise RuntimeError("unmask() comes after mask()")
        if self.client_id not in alive:
            raise UnsafeReveal(f"{self.client_id!r} is answering, so it cannot be a dropped site")
        both = (alive & gone) | (alive & self._revealed_keys) | (gone & self._revealed_seeds)
        if both:
            raise UnsafeReveal(f"refusing to reveal both the seed and the mask-key shares of {sorted(both)}")
        if len(alive) < self.params.threshold:
            raise TooFewSurvivors(self.round, len(alive), self.params.threshold)
        self._revealed_seeds |= alive & set(self._held)
        self._revealed_keys |= gone & set(self._held)
        return Reveal(
            {o: self._held[o][0].to_bytes() for o in sorted(alive & set(self._held))},
            {o: self._held[o][1].to_bytes() for o in sorted(gone & set(self._held))},
        )

    def _seal(self, recipient: str, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        associated = _info("shares", self.round, self.client_id, recipient)
        return nonce + self._aead(self.client_id, recipient).encrypt(nonce, plain, associated)

    def _open(self, sender: str, sealed: bytes) -> bytes:
        associated = _info("shares", self.round, sender, self.client_id)
        return self._aead(sender, self.client_id).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)

    def _aead(self, sender: str, recipient: str) -> ChaCha20Poly1305:
        """One key per (round, sender, recipient), from X25519 on the share keys: each key seals one message."""
        peer = recipient if sender == self.client_id else sender
        return ChaCha20Poly1305(
            _derive(self._share_key, self._roster[peer].share_key, _info("share", self.round, sender, recipient))
        )


class SecAggServer:
    """The server's side of one round: it relays keys and ciphertexts it cannot read and unmasks only the sum.

    Phases: roster (sites advertise two X25519 keys), route (each site's Shamir shares of its self-mask seed and mask
    key, sealed for its neighbours), unmask_request (after the masked updates arrive), aggregate (with the shares the
    survivors reveal). The server is trusted to follow the protocol (honest but curious): the signed consistency
    check of Bonawitz et al., which stops a server naming a site survivor to some sites and dropped to others, is
    not implemented; each site does refuse to reveal both shares of one site itself.
    """

    def __init__(self, round: int, params: SecAggParams) -> None:
        self.round, self.params = round, params
        self._roster: dict[str, PublicKeys] = {}
        self._graph: dict[str, frozenset[str]] = {}
        self._shared: frozenset[str] = frozenset()
        self._request: UnmaskRequest | None = None

    def roster(self, keys: Mapping[str, PublicKeys]) -> dict[str, PublicKeys]:
        """Fixes the round's sites and neighbour graph; the returned roster goes to every site."""
        self.params.check(len(keys))
        if len(keys) < self.params.threshold:
            raise TooFewSurvivors(self.round, len(keys), self.params.threshold)
        self._roster = dict(keys)
        self._graph = neighbour_graph(keys, self.round, self.params.degree(len(keys)))
        return dict(keys)

    def route(self, outboxes: Mapping[str, Mapping[str, bytes]]) -> dict[str, dict[str, bytes]]:
        """Each sharing site's inbox (sender -> ciphertext) from their outboxes (recipient -> ciphertext)."""
        for sender, outbox in outboxes.items():
            if sender not in self._graph or not set(outbox) <= self._graph[sender]:
                raise ValueError(f"{sender!r} is not in the roster or sent shares to non-neighbours")
        if len(outboxes) < self.params.threshold:
            raise TooFewSurvivors(self.round, len(outboxes), self.params.threshold)
        self._shared = frozenset(outboxes)
        inboxes: dict[str, dict[str, bytes]] = {site: {} for site in sorted(self._shared)}
        for sender, outbox in outboxes.items():
            for recipient, ciphertext in outbox.items():
                if recipient in inboxes:
                    inboxes[recipient][sender] = ciphertext
        return inboxes

    def unmask_request(self, masked_from: Collection[str]) -> UnmaskRequest:
        """Whom to ask for which shares, once the masked updates of ``masked_from`` arrived.

        Raises TooFewSurvivors, before any share is asked for, when some survivor's seed or some dropped
        neighbour's mask key has fewer than ``threshold`` surviving holders.
        """
        alive = frozenset(masked_from)
        if not alive <= self._shared:
            raise ValueError(f"masked updates from sites that did not share: {sorted(alive - self._shared)}")
        if len(alive) < self.params.threshold:
            raise TooFewSurvivors(self.round, len(alive), self.params.threshold)
        dropped = {d for d in self._shared - alive if self._graph[d] & alive}
        for owner in alive | dropped:
            holders = len(({owner} | self._graph[owner]) & alive)
            if holders < self.params.threshold:
                raise TooFewSurvivors(self.round, holders, self.params.threshold)
        self._request = UnmaskRequest(tuple(sorted(alive)), tuple(sorted(dropped)))
        return self._request

    def aggregate(self, masked: Mapping[str, np.ndarray], revealed: Mapping[str, Reveal]) -> tuple[np.ndarray, int]:
        """The weighted mean (float64) of the survivors' vectors and their total capped weight.

        Raises TooFewSurvivors, before unmasking anything, when any needed secret has fewer than ``threshold``
        revealed shares; ValueError when a reconstructed mask key does not match its advertised public key.
        """
        request = self._request
        if request is None or set(masked) != set(request.survivors) or not set(revealed) <= set(masked):
            raise ValueError("aggregate() takes the masked updates and reveals of the unmask_request() survivors")
        seeds = self._collect(request.survivors, [r.seed_shares for r in revealed.values()])
        keys = self._collect(request.dropped, [r.key_shares for r in revealed.values()])
        length = len(masked[request.survivors[0]])
        if any(v.dtype != np.uint32 or v.shape != (length,) for v in masked.values()):
            raise ValueError("masked updates must be 1-D uint32 arrays of one length")
        total = np.zeros(length, dtype=np.uint32)
        for words in masked.values():
            np.add(total, words, out=total)
        for shares in seeds.values():
            np.subtract(total, prg(combine(shares, SEED_BYTES), len(total)), out=total)
        for owner, shares in keys.items():
            key = X25519PrivateKey.from_private_bytes(combine(shares, _KEY_BYTES))
            if key.public_key().public_bytes_raw() != self._roster[owner].mask_key:
                raise ValueError(f"the revealed shares of {owner!r}'s mask key do not match its public key")
            for peer in sorted(self._graph[owner] & set(masked)):
                stream = prg(pair_seed(key, self._roster[peer].mask_key, self.round, owner, peer), len(total))
                (np.subtract if peer < owner else np.add)(total, stream, out=total)  # undo what the peer added
        return decode(total, self.params, len(self._roster))

    def _collect(self, owners: Sequence[str], answers: Sequence[Mapping[str, bytes]]) -> dict[str, list[Share]]:
        shares = {owner: [Share.from_bytes(a[owner]) for a in answers if owner in a] for owner in owners}
        for found in shares.values():
            if len(found) < self.params.threshold:
                raise TooFewSurvivors(self.round, len(found), self.params.threshold)
        return shares


def secure_mean(
    vectors: Mapping[str, tuple[np.ndarray, int]],
    params: SecAggParams,
    round: int,
    drop_before_sharing: Collection[str] = frozenset(),
    drop_after_masking: Collection[str] = frozenset(),
) -> tuple[np.ndarray, int]:
    """All phases in one process with real keys and ciphertexts: the weighted mean of (vector, weight) per site
    and the total capped weight. Sites in ``drop_before_sharing`` only advertise; those in ``drop_after_masking``
    share and mask but their update never arrives."""
    clients = {site: SecAggClient(site, round, params) for site in vectors}
    server = SecAggServer(round, params)
    roster = server.roster({site: c.advertise() for site, c in clients.items()})
    inboxes = server.route({s: c.share(roster) for s, c in clients.items() if s not in drop_before_sharing})
    masked = {s: clients[s].mask(*vectors[s], inbox) for s, inbox in inboxes.items() if s not in drop_after_masking}
    request = server.unmask_request(masked)
    revealed = {s: clients[s].unmask(request.survivors, request.dropped) for s in request.survivors}
    return server.aggregate(masked, revealed)


def pair_seed(private: X25519PrivateKey, peer_public: bytes, round: int, site: str, peer: str) -> bytes:
    """s_uv, the seed both sites of a pair derive (X25519 then HKDF bound to the round and the unordered pair)."""
    return _derive(private, peer_public, _info("mask", round, *sorted((site, peer))))


def _derive(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(shared)


def _info(purpose: str, round: int, *sites: str) -> bytes:
    """Unambiguous context bytes: JSON cannot make two (purpose, round, sites) tuples collide."""
    return json.dumps(["fedlens/secagg", purpose, round, *sites]).encode()
