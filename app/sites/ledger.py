"""The hospitals' privacy ledger: epsilon spent per (site, dataset), summed over runs (basic composition)."""

from __future__ import annotations

from itertools import groupby

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import PrivacySpend
from app.sites.schemas import LedgerEntry, LedgerRun


def ledger(*, session: Session) -> list[LedgerEntry]:
    """One entry per (site, dataset), newest run first; basic composition adds the runs' epsilons and deltas, an
    upper bound that holds whatever the runs shared."""
    spends = session.scalars(
        select(PrivacySpend).order_by(PrivacySpend.site, PrivacySpend.dataset, PrivacySpend.updated_at.desc())
    )
    entries = []
    for (site, dataset), group in groupby(spends, key=lambda s: (s.site, s.dataset)):
        rows = list(group)
        entries.append(
            LedgerEntry(
                site=site,
                dataset=dataset,
                epsilon_spent=sum(r.epsilon for r in rows),
                delta_spent=sum(r.delta for r in rows),
                updated_at=rows[0].updated_at,
                runs=[
                    LedgerRun(
                        run_id=r.run_id,
                        experiment=r.experiment,
                        level=r.level,
                        epsilon=r.epsilon,
                        delta=r.delta,
                        rounds=r.rounds,
                        updated_at=r.updated_at,
                    )
                    for r in rows
                ],
            )
        )
    return entries
