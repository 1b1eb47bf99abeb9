//! Source states: one row per source, its item count in a column of its own so that a state
//! written without items never overwrites the count a poll or a prune set.

use postgres::types::Json;
use postgres::Transaction;

use super::*;
use crate::model::SourceState;

/// A stored next poll at most this far ahead of a claim is the claimer's own slot (clocks of
/// one process's timers and the wall clock differ by this much), not another's poll.
const SLACK_US: i64 = 1_000_000;

impl SourceStates for PgEngine {
    fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        let source = source.to_owned();
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT state, item_count FROM source_states WHERE source = $1",
                &[&source],
            )?)
        })?;
        let Some(row) = row else {
            return Ok(SourceState::default());
        };
        let Json(state): Json<SourceState> = row.try_get(0).map_err(|e| StoreError::Corrupt {
            what: "source state",
            message: e.to_string(),
        })?;
        let item_count: i64 = row.get(1);
        Ok(SourceState {
            item_count: item_count.max(0) as u64,
            ..state
        })
    }

    fn put_source_state(&self, source: &str, state: SourceState) -> Result<(), StoreError> {
        let source = source.to_owned();
        self.run(move |client| {
            client.execute(
                "INSERT INTO source_states (source, state) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET state = excluded.state",
                &[&source, &Json(&state)],
            )?;
            Ok(())
        })
    }

    fn claim_poll(
        &self,
        source: &str,
        host: Option<&str>,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        host_gap: std::time::Duration,
    ) -> Result<PollClaim, StoreError> {
        let (source, host) = (source.to_owned(), host.map(str::to_owned));
        let instance = self.instance.clone();
        let now = micros(now);
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let gap = i64::try_from(host_gap.as_micros()).unwrap_or(i64::MAX);
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let claim = claim_in(&mut tx, &source, &instance, now, lease)?;
            if claim != PollClaim::Granted {
                return Ok(claim);
            }
            if let Some(host) = host.filter(|_| gap > 0) {
                if let Some(until) = host_busy_until(&mut tx, &host, now, gap)? {
                    return Ok(PollClaim::Busy {
                        until: time_of(until)?,
                    });
                }
            }
            tx.execute(
                "UPDATE poll_claims SET holder = $2, until_us = $3 WHERE source = $1",
                &[&source, &instance, &now.saturating_add(lease)],
            )?;
            tx.commit()?;
            Ok(PollClaim::Granted)
        })
    }

    fn release_poll(&self, source: &str) -> Result<(), StoreError> {
        let (source, instance) = (source.to_owned(), self.instance.clone());
        self.run(move |client| {
            client.execute(
                "UPDATE poll_claims SET until_us = 0 WHERE source = $1 AND holder = $2",
                &[&source, &instance],
            )?;
            Ok(())
        })
    }
}

/// Whether the claim row of `source` allows `instance` to poll it at `now`: locked while
/// another instance is deciding (`SKIP LOCKED`: it is busy), held by another's claim that
/// has not run out, or polled since it fell due by the stored state.
fn claim_in(
    tx: &mut Transaction<'_>,
    source: &str,
    instance: &str,
    now: i64,
    lease: i64,
) -> Result<PollClaim, StoreError> {
    tx.execute(
        "INSERT INTO poll_claims (source, holder, until_us) VALUES ($1, '', 0)
         ON CONFLICT (source) DO NOTHING",
        &[&source],
    )?;
    let row = tx.query_opt(
        "SELECT holder, until_us FROM poll_claims WHERE source = $1 FOR UPDATE SKIP LOCKED",
        &[&source],
    )?;
    let Some(row) = row else {
        // Another instance is claiming it this very moment.
        return Ok(PollClaim::Busy {
            until: time_of(now.saturating_add(lease.min(SLACK_US)))?,
        });
    };
    let (holder, until): (String, i64) = (row.get(0), row.get(1));
    if holder != instance && until > now {
        return Ok(PollClaim::Busy {
            until: time_of(until)?,
        });
    }
    let state = tx.query_opt(
        "SELECT state FROM source_states WHERE source = $1",
        &[&source],
    )?;
    if let Some(row) = state {
        let Json(state): Json<SourceState> = row.try_get(0).map_err(|e| StoreError::Corrupt {
            what: "source state",
            message: e.to_string(),
        })?;
        if let Some(next) = state.next_poll {
            if micros(next) > now.saturating_add(SLACK_US) {
                return Ok(PollClaim::PolledElsewhere { next: Some(next) });
            }
        }
    }
    Ok(PollClaim::Granted)
}

/// When the next poll of `host` may start, if a poll of it started less than `gap` before
/// `now`; otherwise records `now` as its last poll and answers `None`.
fn host_busy_until(
    tx: &mut Transaction<'_>,
    host: &str,
    now: i64,
    gap: i64,
) -> Result<Option<i64>, StoreError> {
    tx.execute(
        "INSERT INTO host_polls (host, last_us) VALUES ($1, $2)
         ON CONFLICT (host) DO NOTHING",
        &[&host, &i64::MIN],
    )?;
    let last: i64 = tx
        .query_one(
            "SELECT last_us FROM host_polls WHERE host = $1 FOR UPDATE",
            &[&host],
        )?
        .get(0);
    let next = last.saturating_add(gap);
    if next > now {
        return Ok(Some(next));
    }
    tx.execute(
        "UPDATE host_polls SET last_us = $2 WHERE host = $1",
        &[&host, &now],
    )?;
    Ok(None)
}
